/**
 * The exit statuses of Kiln's command-line doors, `kiln client` (the REST API) and the users' SSH door
 * (`ssh kiln@HOST build NAME < Dockerfile`): one table, so a CI script that uses both tests one set of numbers.
 * The top README prints it ("Use Kiln from CI", "Exit statuses"); both doors' help texts print EXIT_HELP.
 * A number, once published, keeps its meaning: pipelines test them.
 */
import type { ErrorCode } from './errors.js';

export const EXIT = {
  /** The build succeeded; or the command did what it was asked (status, list, a build not waited for). */
  succeeded: 0,
  /** The build failed (its reason, and the failing Dockerfile line when known, printed). */
  failed: 1,
  /**
   * Bad usage, found before anything was sent or stored: an unknown command or option, a name or id Kiln does not
   * take, a missing setting (KILN_URL, KILN_TOKEN) or file, a Dockerfile that never arrived on stdin; `help`.
   */
  usage: 2,
  /** The build was cancelled. */
  cancelled: 3,
  /**
   * Kiln refused the Dockerfile sent, as it was sent: the Dockerfile policy (each finding printed with its line), or
   * the input rules (empty, not UTF-8 text, control characters, larger than the upload limit; for `kiln client`
   * also a build context or settings the API does not take). Nothing was stored: fix the input, do not retry.
   */
  dockerfileRefused: 4,
  /**
   * Kiln refused the request otherwise: no such build or Dockerfile (another user's is "no such" too), or not now
   * (a quota or limit, the job switched off, the Dockerfile being deleted, too many commands at once).
   */
  refused: 5,
  /**
   * `kiln client` and `kiln verify`: a download failed its check (digest, SHA256SUMS, signature, an unknown artifact
   * name, a release's name or a file its SHA256SUMS does not list).
   */
  verification: 6,
  /**
   * Who you are no longer opens Kiln, or may not do this: the API token refused (missing, unknown, revoked,
   * expired: 401) or beyond its scope (403); the SSH key revoked or the account disabled (also during a follow).
   */
  auth: 7,
  /**
   * Kiln could not be reached or could not do it: no connection, or 429/5xx for longer than `kiln client`'s
   * retry time; the database or build service unavailable, an internal error, the SSH door stopping. A build
   * already requested goes on.
   */
  unavailable: 8,
  /** `kiln client` only: anything not foreseen on the client's side (a local file system error, a bug). */
  other: 9,
} as const;

export type ExitName = keyof typeof EXIT;
export type ExitStatus = (typeof EXIT)[ExitName];

const SHORT: Record<ExitName, string> = {
  succeeded: 'succeeded',
  failed: 'build failed',
  usage: 'usage',
  cancelled: 'build cancelled',
  dockerfileRefused: 'Dockerfile refused: its policy or the input rules; nothing stored',
  refused: 'refused: not found, a quota or limit, the job switched off, too many at once',
  verification: 'a download failed verification (kiln client, kiln verify)',
  auth: 'token or key refused, or beyond its scope',
  unavailable: 'Kiln unreachable or unavailable',
  other: 'anything else (kiln client)',
};

/** The table, a status a line, for both doors' help texts. */
export const EXIT_HELP: string = [
  'exit status (the same from kiln client and the SSH door):\n',
  ...(Object.keys(EXIT) as ExitName[]).map((k) => `  ${EXIT[k]}  ${SHORT[k]}\n`),
].join('');

/**
 * The exit status an error code means (a KilnError's, as the REST API also answers it), for both doors. Bad input
 * (`invalid_input`, `too_large`, `bad_request`) is the Dockerfile's refusal when the request carried the Dockerfile
 * (the door's `build`, the client's PUT); otherwise the request was refused. Codes that say "who you are" are
 * `auth`; codes of the server's own failures are `unavailable`.
 */
export function exitStatusFor(code: ErrorCode, o: { dockerfileSent: boolean }): ExitStatus {
  switch (code) {
    case 'policy_violation':
      return EXIT.dockerfileRefused;
    case 'invalid_input':
    case 'too_large':
    case 'bad_request':
      return o.dockerfileSent ? EXIT.dockerfileRefused : EXIT.refused;
    case 'unauthenticated':
    case 'forbidden':
      return EXIT.auth;
    case 'not_found':
    case 'method_not_allowed':
    case 'conflict':
    case 'idempotency_key_reused':
    case 'quota_exceeded':
    case 'rate_limited':
    case 'limit_exceeded':
      return EXIT.refused;
    case 'backend_unavailable':
    case 'insufficient_storage':
    case 'timeout':
    case 'build_failed':
    case 'internal':
      return EXIT.unavailable;
  }
}
