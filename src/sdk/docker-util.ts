import type Dockerode from 'dockerode';
import { KilnError } from '../shared/errors.js';

/**
 * Follows a JSON-lines stream from the engine (build, import) to its end. Each `stream`/`status` text goes to
 * `onText`; an `error` object in the stream (how the engine reports a failed RUN) becomes a KilnError.
 */
export function followStream(
  docker: Dockerode,
  stream: NodeJS.ReadableStream,
  onText: (s: string) => void,
  what: string,
): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    let failure: string | undefined;
    docker.modem.followProgress(
      stream,
      (err: Error | null, out: Record<string, unknown>[]) => {
        if (err)
          return reject(
            err instanceof KilnError
              ? err
              : new KilnError('build_failed', `${what} failed: ${err.message}`, { cause: err }),
          );
        if (failure) return reject(new KilnError('build_failed', `${what} failed: ${failure}`));
        resolve(out ?? []);
      },
      (ev: Record<string, unknown>) => {
        if (typeof ev.stream === 'string') onText(ev.stream);
        else if (typeof ev.status === 'string')
          onText(ev.status + (typeof ev.progress === 'string' ? ' ' + ev.progress : '') + '\n');
        if (ev.error !== undefined || ev.errorDetail !== undefined) {
          const detail = ev.errorDetail as { message?: string } | undefined;
          failure = String(detail?.message ?? ev.error);
          onText(`ERROR: ${failure}\n`);
        }
      },
    );
  });
}

export async function imageInfo(docker: Dockerode, name: string): Promise<Dockerode.ImageInspectInfo | undefined> {
  try {
    return await docker.getImage(name).inspect();
  } catch (e) {
    if ((e as { statusCode?: number }).statusCode === 404) return undefined;
    throw new KilnError('backend_unavailable', 'The Docker engine did not answer', { cause: e });
  }
}
