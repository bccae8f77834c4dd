import Dockerode from 'dockerode';
import tar from 'tar-stream';

/** The shared engine (never reconfigured here): the tests only build FROM scratch and remove what they made. */
export const docker = new Dockerode({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });

export interface EngineBuild {
  ok: boolean;
  error?: string;
  /** The final image's config, when the build succeeded. */
  config?: {
    Env?: string[] | null;
    WorkingDir?: string;
    Labels?: Record<string, string> | null;
    OnBuild?: string[] | null;
  };
  /** Every image this build made (intermediate and final), to be removed by id. */
  ids: string[];
}

async function contextTar(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, data] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, data);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Builds with the engine's legacy builder (what the SDK's dockerode buildImage drives), without the layer cache so
 * that every image it names is one this build made.
 */
export async function engineBuild(
  dockerfile: string,
  buildArgs: Record<string, string> = {},
  files: Record<string, string> = {},
): Promise<EngineBuild> {
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.buildImage(
      (await contextTar({ ...files, Dockerfile: dockerfile })) as unknown as NodeJS.ReadableStream,
      {
        buildargs: buildArgs,
        nocache: true,
        rm: true,
        forcerm: true,
        pull: false,
      } as Dockerode.ImageBuildOptions,
    );
  } catch (e) {
    // The engine refuses a Dockerfile it cannot parse before building anything (HTTP 400).
    const err = e as { statusCode?: number; message?: string };
    if (err.statusCode === 400) return { ok: false, error: err.message, ids: [] };
    throw e;
  }
  const ids: string[] = [];
  let error: string | undefined;
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(
      stream,
      (err: Error | null) => (err ? reject(err) : resolve()),
      (ev: { stream?: string; error?: string; aux?: { ID?: string } }) => {
        for (const m of (ev.stream ?? '').matchAll(/---> ([0-9a-f]{12})\b|Successfully built ([0-9a-f]{12})/g))
          ids.push((m[1] ?? m[2])!);
        if (ev.error) error = ev.error;
      },
    );
  });
  const unique = [...new Set(ids)];
  if (error) return { ok: false, error, ids: unique };
  const last = unique[unique.length - 1]!;
  const info = await docker.getImage(last).inspect();
  return { ok: true, config: info.Config, ids: unique };
}

/** Removes images by id, newest first (children before parents); ones already gone are fine. */
export async function removeImages(ids: readonly string[]): Promise<void> {
  for (const id of [...ids].reverse()) {
    await docker
      .getImage(id)
      .remove({ noprune: false })
      .catch((e: { statusCode?: number }) => {
        if (e.statusCode !== 404 && e.statusCode !== 409) throw e;
      });
  }
}
