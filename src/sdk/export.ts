import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';
import { extractRootfs, type ExtractStats } from './extract.js';
import type { Reporter } from './reporter.js';

/**
 * `docker create` + `docker export` of the built image, streamed straight into the safe extractor (no tar file on
 * disk, no mount). The container never starts: it has no network and a command that is never run.
 */
export async function exportRootfs(
  docker: Dockerode,
  imageId: string,
  root: string,
  limits: { maxBytes: number; maxEntries: number },
  rep: Reporter,
): Promise<ExtractStats> {
  const c = await docker.createContainer({
    Image: imageId,
    Entrypoint: ['/kiln-never-started'],
    Cmd: [],
    NetworkDisabled: true,
    Labels: { 'io.kiln.export': '1' },
    HostConfig: { NetworkMode: 'none' },
  });
  try {
    const stream = (await c.export()) as unknown as NodeJS.ReadableStream;
    const stats = await extractRootfs(stream as unknown as import('node:stream').Readable, root, {
      ...limits,
      onWarning: (m) => rep.log(`[kiln] export: ${m}`),
    });
    if (stats.capabilityCount) {
      const shown = stats.capabilities
        .slice(0, 10)
        .map((c) => `/${c.name} (${c.capability})`)
        .join(', ');
      rep.log(
        `[kiln] export: file capabilities kept on ${stats.capabilityCount} file(s): ${shown}${stats.capabilityCount > 10 ? ', ...' : ''}`,
      );
    }
    if (stats.capabilityFailures)
      rep.log(
        `[kiln] export: ${stats.capabilityFailures} file capabilities could not be set (setting them needs root/CAP_SETFCAP and setfattr from the attr package); those programs run without them`,
      );
    if (stats.skippedCount)
      rep.log(
        `[kiln] export: ${stats.skippedCount} entries not copied (device nodes are provided by devtmpfs at boot)`,
      );
    return stats;
  } catch (e) {
    if (e instanceof KilnError) throw e;
    throw new KilnError('build_failed', `Exporting the image's filesystem failed: ${(e as Error).message}`, {
      cause: e,
    });
  } finally {
    await c.remove({ force: true }).catch(() => undefined);
  }
}
