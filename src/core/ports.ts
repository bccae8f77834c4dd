import type { Readable } from 'node:stream';
import type { ArtifactName, BuildState, BuildStatus, Reply, REPLIES } from '../protocol/index.js';

/**
 * The port through which the core reaches the build backend: the glue, as the core needs it. The core defines it
 * and never builds one; a composition root (src/cmd) builds the SSH implementation (src/glue-client: ssh2 client,
 * pinned host key, one exec per call over a reused connection) and tests run the real glue over an in-process
 * transport. Every argument goes through protocol.formatCommand and every reply through the protocol's schemas.
 *
 * Lifecycle: built by the caller, used by any number of concurrent calls, `close()` once at shutdown.
 *
 * Idempotency: every verb is idempotent on the glue side (job.put is create-or-update, job.build returns the same
 * build for a key it has seen, cancel/withdraw of a finished build report its state), so a caller may retry any
 * call after `backend_unavailable` or `timeout`.
 *
 * Errors: a call the glue refused rejects with the KilnError it reported (same code and message: `not_found` for a
 * missing job, build or artifact, `conflict`, `invalid_input`); an unreachable or unauthenticated glue rejects with
 * `backend_unavailable`, a glue that does not answer in time with `timeout`. Nothing was changed in either case.
 */
export interface GluePort {
  call<V extends keyof typeof REPLIES>(
    verb: V,
    args: ReadonlyArray<string | number>,
    stdin?: string | Buffer,
  ): Promise<Reply<V>>;
  /**
   * build.wait: the backend build's status once its state is no longer `known` (the state the caller last saw), or
   * after `seconds` (at most protocol.MAX_WAIT_SECONDS) with the status it has then. Held beside the calls, never in
   * a call's slot (on the SSH transport, a connection of its own with at most MAX_HELD_WAITS at once); `signal`
   * abandons it (the promise rejects with the signal's reason). A read: may be repeated or abandoned at any time.
   */
  wait(job: number, build: number, known: BuildState, seconds: number, signal?: AbortSignal): Promise<BuildStatus>;
  /** Streams an artifact's bytes from `offset`. A stream that breaks off errors with backend_unavailable or timeout. */
  artifact(job: number, build: number, name: ArtifactName, offset?: number): Promise<Readable>;
  close(): Promise<void>;
}

/** Glue failures worth retrying later (nothing happened); anything else is the glue's answer about the request. */
export function isTransient(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === 'backend_unavailable' || code === 'timeout';
}
