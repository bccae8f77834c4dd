/**
 * Input rules for everything a user types or uploads. Each function either returns the clean value or throws a
 * KilnError whose message is shown to the user as is. Nothing here touches the database or the disk, so callers
 * validate first and store nothing when this throws.
 */
import { z } from 'zod';
// Form keys must be what the glue accepts: the protocol's one pattern.
import { IDEMPOTENCY_KEY_RE, RELEASE_NAME_RE } from '../protocol/index.js';
import { KilnError, invalidInput } from '../shared/errors.js';

export const USERNAME_RE = /^[a-z][a-z0-9_-]{2,31}$/;
/**
 * Characters no name a user gives may hold: C0 and C1 controls, DEL, and the bidirectional controls (U+202E and
 * kin) that make a listing show a name other than the one stored ("Dockerfile\u202e" and the Trojan Source tricks).
 */
// eslint-disable-next-line no-control-regex
export const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
export const DOCKERFILE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 128;

const USERNAME_RULE =
  'Username must be 3-32 characters: lowercase letters, digits, "_" or "-", starting with a letter.';
export const usernameSchema = z.string().regex(USERNAME_RE, USERNAME_RULE);

export function parseUsername(v: unknown): string {
  if (typeof v !== 'string') throw invalidInput(USERNAME_RULE);
  const r = usernameSchema.safeParse(v);
  if (!r.success) throw invalidInput(r.error.issues[0]!.message);
  return r.data;
}

/** 12-128 Unicode code points, anything printable or not; never truncated or normalised. */
export function parsePassword(v: unknown): string {
  if (typeof v !== 'string') throw new KilnError('bad_request', 'Password is required.');
  if (!isWellFormed(v)) throw new KilnError('bad_request', 'Password is not valid Unicode.');
  const n = [...v].length;
  if (n < PASSWORD_MIN || n > PASSWORD_MAX) {
    throw new KilnError('bad_request', `Password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters long.`);
  }
  if (isCommonPassword(v))
    throw new KilnError('bad_request', 'That password is too common; choose another (a passphrase works well).');
  return v;
}

/**
 * No offline copy of a breach corpus ships with Kiln; this catches the obvious choices that pass the length rule
 * (one repeated character, a keyboard or digit run, the usual words with padding).
 */
const COMMON = new Set([
  'password1234',
  'password12345',
  'password123456',
  'passwordpassword',
  'password123!',
  'password1234!',
  '123456789012',
  '1234567890123',
  '12345678901234',
  'qwertyuiopas',
  'qwertyuiop12',
  'qwerty123456',
  '1q2w3e4r5t6y',
  'abcdefghijkl',
  'abc123abc123',
  'iloveyou1234',
  'welcome12345',
  'letmein12345',
  'changeme1234',
  'administrator',
  'adminadmin12',
  'qwertyqwerty',
  'asdfghjkl123',
  'zxcvbnm12345',
  'monkey123456',
  'dragon123456',
  'football1234',
]);
export function isCommonPassword(pw: string): boolean {
  const p = pw.toLowerCase();
  if (COMMON.has(p)) return true;
  // one or two ASCII characters repeated (emoji passwords are long enough to stand on their own)
  if (/^[\x20-\x7e]+$/.test(p) && new Set(p).size <= 2) return true;
  return '01234567890123456789'.includes(p) || 'abcdefghijklmnopqrstuvwxyz'.includes(p);
}

export function parseDockerfileName(v: unknown): string {
  if (typeof v !== 'string' || v.length === 0) throw invalidInput('Name is required.');
  if (!DOCKERFILE_NAME_RE.test(v)) {
    throw invalidInput(
      'Name must be 1-63 characters: lowercase letters, digits, ".", "_" or "-", starting with a letter or digit.',
    );
  }
  return v;
}

const RELEASE_NAME_RULE =
  'A release name is 1-64 letters, digits, ".", "_" or "-" (such as v1.2), not "." or "..", not starting with "-".';

export function parseReleaseName(v: unknown): string {
  if (typeof v !== 'string' || !RELEASE_NAME_RE.test(v)) throw invalidInput(RELEASE_NAME_RULE);
  return v;
}

export function parseIdempotencyKey(v: unknown): string {
  if (typeof v !== 'string' || !IDEMPOTENCY_KEY_RE.test(v))
    throw new KilnError('bad_request', 'Missing or malformed form key; reload the page and try again.');
  return v;
}

/** Positive integer ids from a URL; anything else is "not found" (no distinction between bad and unknown ids). */
export function parseId(v: unknown): number {
  if (typeof v !== 'string' || !/^[1-9][0-9]{0,11}$/.test(v)) throw new KilnError('not_found', 'Not found');
  return Number(v);
}

/** No lone surrogates (String#isWellFormed is ES2024, newer than our target lib). */
export const isWellFormed = (s: string): boolean =>
  !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Uploaded bytes -> Dockerfile text, or a clear rejection. */
export function decodeDockerfile(bytes: Uint8Array, maxBytes: number): string {
  if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw invalidInput('The Dockerfile is not valid UTF-8 text.');
  }
  return checkDockerfileText(text, maxBytes);
}

/**
 * Rules for Dockerfile text however it arrived: not empty, at most `maxBytes` UTF-8 bytes, no NUL or other C0
 * control except TAB/LF/CR, no DEL, no bare CR. CRLF becomes LF before the size check, so a browser's textarea
 * (which always submits CRLF) and a file upload of the same text store the same bytes.
 */
export function checkDockerfileText(raw: string, maxBytes: number): string {
  if (!isWellFormed(raw)) throw invalidInput('The Dockerfile is not valid UTF-8 text.');
  const text = raw.replace(/\r\n/g, '\n');
  if (text.trim().length === 0) throw invalidInput('The Dockerfile is empty.');
  if (Buffer.byteLength(text, 'utf8') > maxBytes) throw tooLarge(maxBytes);
  if (text.includes('\0')) throw invalidInput('The Dockerfile contains a NUL byte.');
  if (text.includes('\r'))
    throw invalidInput('The Dockerfile contains a carriage return that is not followed by a line feed.');
  // eslint-disable-next-line no-control-regex
  const bad = /[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]/.exec(text);
  if (bad) {
    const line = text.slice(0, bad.index).split('\n').length;
    throw invalidInput(`The Dockerfile contains a control character (code ${bad[0].charCodeAt(0)}) on line ${line}.`);
  }
  return text;
}

export function tooLarge(maxBytes: number): KilnError {
  return new KilnError('too_large', `The Dockerfile is larger than ${Math.floor(maxBytes / 1024)} KiB.`);
}
