/**
 * Commands: what a use case accepts, as zod schemas. A front door passes the raw values it received (form fields,
 * JSON, URL parameters) and the use case parses them here before anything else happens; fields a schema does not
 * name (a `role` in a registration body, say) are dropped. Each field applies one rule of validation.ts, so a bad
 * value fails with the same code and message whichever door it came through.
 */
import { z } from 'zod';
import { KilnError, isKilnError } from '../shared/errors.js';
import {
  checkDockerfileText,
  parseDockerfileName,
  parseId,
  parseIdempotencyKey,
  parsePassword,
  parseReleaseName,
  parseUsername,
} from './validation.js';

/** A field checked by one of validation.ts's rules; its KilnError (code and message) is what the caller sees. */
export function rule<T>(check: (v: unknown) => T) {
  return z.unknown().transform((v, ctx): T => {
    try {
      return check(v);
    } catch (e) {
      if (!isKilnError(e)) throw e;
      ctx.addIssue({ code: 'custom', message: e.message, params: { kiln: e } });
      return z.NEVER;
    }
  });
}

/** Parses a command; the first problem (in the schema's field order) becomes the KilnError thrown. */
export function parse<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const r = schema.safeParse(input ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const kiln = (issue as { params?: { kiln?: unknown } }).params?.kiln;
  if (isKilnError(kiln)) throw kiln;
  throw new KilnError('invalid_input', issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message);
}

/** An id from a URL: anything but a positive integer is "not found", like an unknown id. */
export const Id = rule(parseId);
export const IdempotencyKey = rule(parseIdempotencyKey);
export const Username = rule(parseUsername);
export const Password = rule(parsePassword);
export const DockerfileName = rule(parseDockerfileName);
export const ReleaseName = rule(parseReleaseName);
/** Dockerfile text as received: the size limit comes from the configuration, so the use case checks it. */
export const dockerfileText = (maxBytes: number) =>
  rule((v) => {
    if (typeof v !== 'string') throw new KilnError('invalid_input', 'The Dockerfile is empty.');
    return checkDockerfileText(v, maxBytes);
  });
/** Free text for a password check: never logged, never trimmed. */
export const Secret = z.unknown();
