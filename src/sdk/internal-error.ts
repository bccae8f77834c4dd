import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { SDK_INTERNAL_ERROR_FILE } from '../protocol/index.js';

/**
 * An internal error's detail (its message may name paths, hosts or engine internals) is for the operator, not the
 * user who reads result.json and the build page. It goes to SDK_INTERNAL_ERROR_FILE beside the artifacts (never
 * archived or served; the local runner moves it into the glue's log) under a reference; the user's message carries
 * only that reference. Returns the user's message.
 */
export async function recordInternalError(outDir: string, e: unknown, detail?: unknown): Promise<string> {
  const ref = randomBytes(6).toString('hex');
  const err = e as { message?: unknown; stack?: unknown; cause?: unknown } | null;
  const text = [
    `reference ${ref} at ${new Date().toISOString()}`,
    typeof err?.stack === 'string' ? err.stack : String(err?.message ?? e),
    ...(err?.cause !== undefined ? [`cause: ${String((err.cause as { stack?: unknown })?.stack ?? err.cause)}`] : []),
    ...(detail !== undefined ? [`detail: ${JSON.stringify(detail).slice(0, 16_000)}`] : []),
  ].join('\n');
  await fsp.appendFile(path.join(outDir, SDK_INTERNAL_ERROR_FILE), `${text}\n`, { mode: 0o600 }).catch(() => undefined);
  return `Internal error in the build service (reference ${ref}); the operator's log has the detail`;
}
