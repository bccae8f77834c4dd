import type { Readable } from 'node:stream';
import type { ArtifactName, Reply, REPLIES } from '../../protocol/index.js';

/**
 * The web's only way to reach the glue. The real implementation speaks SSH (ssh2 client, pinned host key, one
 * exec per call over a reused connection); all arguments go through protocol.formatCommand.
 *
 * Errors: a failed call rejects with the KilnError the glue reported (same code and message); an unreachable or
 * unauthenticated glue rejects with KilnError('backend_unavailable'). Calls are idempotent on the glue side, so a
 * caller may retry after backend_unavailable.
 */
export interface GlueClient {
  call<V extends keyof typeof REPLIES>(verb: V, args: ReadonlyArray<string | number>, stdin?: string | Buffer): Promise<Reply<V>>;
  /** Streams an artifact's bytes from `offset`. */
  artifact(job: number, build: number, name: ArtifactName, offset?: number): Promise<Readable>;
  close(): Promise<void>;
}
