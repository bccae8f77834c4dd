import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { buildResultSchema, type BuildResult, type ResultArtifact } from '../protocol/sdk-output.js';
import type { ErrorCode } from '../shared/errors.js';

/** DIR/result.json's shape is the protocol's (src/protocol/sdk-output.ts): the glue and the web read exactly it. */
export type { BuildResult };
/** One produced file. `size` is the apparent size; `allocated` what it really takes on disk (sparse raw). */
export type Artifact = ResultArtifact;

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

export async function describeArtifact(dir: string, name: string, format: string): Promise<Artifact> {
  const file = path.join(dir, name);
  // Flush first: ext4 delayed allocation otherwise under-reports the blocks of a file just written.
  const fh = await fsp.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  const st = await fsp.stat(file);
  return { name, format, size: st.size, allocated: st.blocks * 512, sha256: await sha256File(file) };
}

/** Written atomically (temp + rename) so a reader never sees half a result; checked against the schema first. */
export async function writeResult(dir: string, r: BuildResult): Promise<void> {
  const tmp = path.join(dir, `.result.json.${process.pid}`);
  await fsp.writeFile(tmp, JSON.stringify(buildResultSchema.parse(r), null, 2) + '\n');
  await fsp.rename(tmp, path.join(dir, 'result.json'));
}

/** For failures before the pipeline starts (bad arguments): still leave a result.json the caller can read. */
export async function writeFailureResult(
  dir: string,
  sdkVersion: string,
  error: { code: ErrorCode; message: string },
): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const now = new Date().toISOString();
  await writeResult(dir, {
    ok: false,
    sdkVersion,
    startedAt: now,
    finishedAt: now,
    artifacts: [],
    bootTests: [],
    stages: [],
    error,
  });
}
