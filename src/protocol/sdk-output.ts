/**
 * What `kiln sdk build` tells whoever runs it, defined once for every part that writes or reads it: the SDK writes
 * both (reporter.ts, result.ts), the glue's backends read the progress lines out of the build log and the failure
 * out of result.json, the web shows them. Imports only zod and shared: the SDK may import it.
 *
 * - Progress events: one line on stdout per event, `##kiln {"stage","percent","message"?}`. They land in the build
 *   log as printed; a build's own output can never pass for one (the SDK escapes lines that start with the prefix).
 * - result.json: written atomically in the output directory however the build ends (unless the SDK is killed).
 */
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '../shared/errors.js';

export const PROGRESS_PREFIX = '##kiln ';

export const progressEventSchema = z.object({
  stage: z.string().max(64),
  percent: z.number().min(0).max(100),
  message: z.string().max(500).optional(),
});
export type ProgressEvent = z.infer<typeof progressEventSchema>;

/** The event a whole log line carries, or undefined for any other line (a torn or foreign one included). */
export function parseProgressLine(line: string): ProgressEvent | undefined {
  if (!line.startsWith(PROGRESS_PREFIX)) return undefined;
  try {
    const ev = progressEventSchema.safeParse(JSON.parse(line.slice(PROGRESS_PREFIX.length)));
    return ev.success ? ev.data : undefined;
  } catch {
    return undefined;
  }
}

/** The last progress event in a piece of log text (events start a line). */
export function lastProgress(text: string): ProgressEvent | undefined {
  let at = text.lastIndexOf(PROGRESS_PREFIX);
  while (at >= 0) {
    if (at === 0 || text[at - 1] === '\n') {
      const end = text.indexOf('\n', at);
      const ev = parseProgressLine(text.slice(at, end < 0 ? undefined : end));
      if (ev) return ev;
    }
    at = at === 0 ? -1 : text.lastIndexOf(PROGRESS_PREFIX, at - 1);
  }
  return undefined;
}

/** One produced file. `size` is the apparent size; `allocated` what it really takes on disk (sparse raw). */
export const resultArtifactSchema = z.object({
  name: z.string(),
  format: z.string(),
  size: z.number().int().nonnegative(),
  allocated: z.number().int().nonnegative(),
  sha256: z.string(),
});
export type ResultArtifact = z.infer<typeof resultArtifactSchema>;

export const bootTestResultSchema = z.object({
  artifact: z.string(),
  firmware: z.enum(['bios', 'uefi']),
  passed: z.boolean(),
  seconds: z.number(),
  reason: z.string().optional(),
  serialLog: z.string().optional(),
});
export type BootTestResult = z.infer<typeof bootTestResultSchema>;

export const stageTimingSchema = z.object({ name: z.string(), seconds: z.number() });
export type StageTiming = z.infer<typeof stageTimingSchema>;

const errorCode = z
  .string()
  .refine(
    (c): c is ErrorCode => Object.hasOwn(ERROR_CODES, c),
    'an error code of shared/errors.ts',
  ) as unknown as z.ZodType<ErrorCode>;

/** DIR/result.json. */
export const buildResultSchema = z.object({
  ok: z.boolean(),
  sdkVersion: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  artifacts: z.array(resultArtifactSchema),
  bootTests: z.array(bootTestResultSchema),
  stages: z.array(stageTimingSchema),
  error: z.object({ code: errorCode, message: z.string() }).optional(),
});
export type BuildResult = z.infer<typeof buildResultSchema>;

/**
 * A result.json as a reader gets it (its bytes were written by a build's SDK: untrusted): the document, or
 * undefined when it is not one. Fields beyond the schema are dropped.
 */
export function parseBuildResult(text: string): BuildResult | undefined {
  try {
    const r = buildResultSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
