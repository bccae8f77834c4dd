import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { XMLParser } from 'fast-xml-parser';
import {
  ARTIFACT_NAMES,
  FIRMWARES,
  FORMATS,
  IMAGE_NAME_RE,
  gitSourceSchema,
  SCHEDULES,
  type JobSpec,
  type Schedule,
} from '../../../protocol/index.js';
import { KilnError } from '../../../shared/errors.js';

/**
 * Renders jenkins/job.xml for one Kiln job. The template has `{{slot}}` markers only inside text content; every
 * value is validated against a fixed pattern and XML-escaped, so a rendered document has exactly the template's
 * element structure whatever the input (test/jenkins/template.test.ts parses both and compares). User text reaches
 * only <description>; everything else is an enum, a number, base64 or a config value checked at startup.
 */

/**
 * The timer specs of a job without a chosen time (specs from before the hour existed). "H" hashes on the job name
 * so jobs spread over the day or week.
 */
export const TIMER_SPECS: Record<Schedule, string | null> = { off: null, daily: 'H H * * *', weekly: 'H H * * H' };

/**
 * The timer spec of a schedule: with an hour (and weekday), `TZ=UTC` then that hour of every day (or of that day of
 * the week), the minute hashed on the job name so jobs due at one hour spread over it; without, TIMER_SPECS. Built
 * from numbers checked here only.
 */
export function timerSpec(s: Pick<JobSpec, 'schedule' | 'scheduleHour' | 'scheduleWeekday'>): string | null {
  if (s.schedule === 'off' || s.scheduleHour === undefined) return TIMER_SPECS[s.schedule];
  const hour = s.scheduleHour;
  const weekday = s.scheduleWeekday ?? 1;
  if (!Number.isInteger(hour) || hour < 0 || hour > 23 || !Number.isInteger(weekday) || weekday < 0 || weekday > 6) {
    throw new KilnError('invalid_input', 'schedule hour must be 0-23 and weekday 0-6');
  }
  return `TZ=UTC\nH ${hour} * * ${s.schedule === 'daily' ? '*' : weekday}`;
}

/**
 * Reads a timer spec back (a job someone may have edited in Jenkins): one of Kiln's own, or `other` with its text.
 * Comment lines are ignored, as Jenkins does.
 */
export function parseTimerSpec(spec: string | undefined): {
  schedule: Schedule | 'other';
  scheduleHour?: number;
  scheduleWeekday?: number;
} {
  const lines = (spec ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (lines.length === 0) return { schedule: 'off' };
  const utc = lines[0] === 'TZ=UTC';
  const rest = utc ? lines.slice(1) : lines;
  if (rest.length === 1) {
    if (!utc && rest[0] === TIMER_SPECS.daily) return { schedule: 'daily' };
    if (!utc && rest[0] === TIMER_SPECS.weekly) return { schedule: 'weekly' };
    const m = utc ? /^H ([0-9]{1,2}) \* \* (\*|[0-6])$/.exec(rest[0]!) : null;
    if (m && Number(m[1]) <= 23) {
      return m[2] === '*'
        ? { schedule: 'daily', scheduleHour: Number(m[1]) }
        : { schedule: 'weekly', scheduleHour: Number(m[1]), scheduleWeekday: Number(m[2]) };
    }
  }
  return { schedule: 'other' };
}

/** One argument of the agent-side SDK command: a path or a plain word, nothing a shell or CDATA could misread. */
const SDK_ARG = /^[A-Za-z0-9_./=:,+@%-]+$/;
/** Jenkins label expression: names and the operators &&, ||, !, (, ), ->, <->. */
const LABEL = /^[A-Za-z0-9_.&|!()<> -]{1,200}$/;

/**
 * Linux refuses one environment string longer than 128 KiB (MAX_ARG_STRLEN), and Jenkins passes parameters to the
 * shell step as environment variables, so a longer parameter would make every build fail at exec time.
 */
export const MAX_PARAM_B64 = 120_000;

export interface TemplateSettings {
  label: string;
  /** Build records (logs) kept per job, Jenkins' `numToKeep`; 0 = all. Never fewer than retention keeps artifacts of. */
  keepBuilds: number;
  /** The retention a job spec without one gets (one from a web older than retention): the glue's own config. */
  retention: { keepBuilds: number; keepDays: number };
  timeoutSeconds: number;
  /** argv of the SDK on the agent, e.g. ['/usr/local/bin/kiln', 'sdk', 'build']. */
  sdkCommand: readonly string[];
}

/** Archive only the fixed artifact names from out/ (SECURITY-CHECKLIST 3.5). */
export const ARCHIVE_PATTERN = ARTIFACT_NAMES.map((n) => `out/${n}`).join(',');
export const ARTIFACT_PREFIX = 'out/';

const TEMPLATE_PATH = fileURLToPath(new URL('../../../../jenkins/job.xml', import.meta.url));
let cached: string | undefined;
export function jobTemplate(): string {
  cached ??= readFileSync(TEMPLATE_PATH, 'utf8');
  return cached;
}

/** The fragment for <triggers>; the spec comes from timerSpec only (numbers and constant text). */
function timerFragment(s: Pick<JobSpec, 'schedule' | 'scheduleHour' | 'scheduleWeekday'>): string {
  const spec = timerSpec(s);
  return spec === null
    ? ''
    : `\n    <hudson.triggers.TimerTrigger>\n      <spec>${spec}</spec>\n    </hudson.triggers.TimerTrigger>\n  `;
}

/**
 * Rejects what XML cannot carry or Jenkins cannot persist: C0 controls other than TAB, LF and CR, DEL-free C1 is
 * allowed, but U+FFFE/U+FFFF and unpaired surrogates are not characters XML allows.
 */
export function checkXmlText(value: string, field: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]/.test(value))
    throw new KilnError('invalid_input', `${field} contains control characters`);
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(value))
    throw new KilnError('invalid_input', `${field} is not valid Unicode`);
  return value;
}

/** Escapes text content and attribute values alike. CR becomes a character reference so parsers keep it. */
export function escapeXml(value: string): string {
  return value.replace(
    /[&<>"'\r]/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;', '\r': '&#13;' })[c]!,
  );
}

const shellQuote = (s: string) => `'${s}'`;

/** Validates config-derived settings once (the glue refuses to start with bad ones). */
export function checkSettings(s: TemplateSettings): TemplateSettings {
  if (!LABEL.test(s.label)) throw new KilnError('invalid_input', 'glue.jenkins.label is not a valid label expression');
  for (const [k, v, min] of [
    ['glue.jenkins.keepBuilds', s.keepBuilds, 0],
    ['glue.jenkins.timeoutSeconds', s.timeoutSeconds, 1],
    ['retention.keepBuilds', s.retention.keepBuilds, 0],
    ['retention.keepDays', s.retention.keepDays, 0],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < min || v > 10_000_000)
      throw new KilnError('invalid_input', `${k} must be an integer from ${min} to 10000000`);
  }
  if (s.sdkCommand.length === 0 || s.sdkCommand.some((a) => !SDK_ARG.test(a))) {
    throw new KilnError('invalid_input', 'glue.jenkins.sdkCommand must be words of [A-Za-z0-9_./=:,+@%-]');
  }
  return s;
}

/**
 * The job's build discarder (hudson.tasks.LogRotator; -1 = no limit): artifacts by the site's retention (the spec's,
 * else the glue's own), so Jenkins discards what the web's rule discards on the local backend; records (logs) by
 * `keepBuilds`, never fewer than the artifacts kept (a record goes with its artifacts). Pinned builds are kept by
 * `keepLog`, which LogRotator skips.
 */
export function discarderOf(
  spec: Pick<JobSpec, 'retention'>,
  settings: Pick<TemplateSettings, 'keepBuilds' | 'retention'>,
): { numToKeep: number; artifactNumToKeep: number; artifactDaysToKeep: number } {
  const r = spec.retention ?? settings.retention;
  const limit = (n: number) => (Number.isSafeInteger(n) && n > 0 ? n : -1);
  const artifactNumToKeep = limit(r.keepBuilds);
  const records = limit(settings.keepBuilds);
  return {
    numToKeep: records === -1 || artifactNumToKeep === -1 ? -1 : Math.max(records, artifactNumToKeep),
    artifactNumToKeep,
    artifactDaysToKeep: limit(r.keepDays),
  };
}

/** The description shown in Jenkins: display text only (Jenkins' markup formatter is plain text). */
export function describe(job: number, spec: Pick<JobSpec, 'name' | 'owner'>): string {
  return `Kiln job ${job}: Dockerfile "${spec.name}" of ${spec.owner}. Managed by Kiln; changes made here are overwritten.`;
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');

/** Renders the config.xml of job `job`. Throws invalid_input for anything the template cannot carry safely. */
export function renderJobXml(job: number, spec: JobSpec, settings: TemplateSettings): string {
  if (!Number.isSafeInteger(job) || job < 1) throw new KilnError('invalid_input', 'job id must be a positive integer');
  checkSettings(settings);
  if (!(SCHEDULES as readonly string[]).includes(spec.schedule))
    throw new KilnError('invalid_input', 'unknown schedule');
  const formats = [...new Set(spec.formats)];
  if (formats.length === 0 || formats.some((f) => !(FORMATS as readonly string[]).includes(f)))
    throw new KilnError('invalid_input', 'unknown output format');
  const description = checkXmlText(describe(job, spec), 'description');
  checkXmlText(spec.dockerfile, 'Dockerfile');
  const dockerfileB64 = b64(spec.dockerfile);
  if (dockerfileB64.length > MAX_PARAM_B64)
    throw new KilnError('invalid_input', 'Dockerfile too large for a Jenkins parameter');
  const contextB64 = spec.contextTarBase64 ?? '';
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(contextB64)) throw new KilnError('invalid_input', 'build context is not base64');
  if (contextB64.length > MAX_PARAM_B64) {
    throw new KilnError(
      'invalid_input',
      `build context too large for the Jenkins backend (at most ${MAX_PARAM_B64} base64 characters)`,
    );
  }
  const argLines = Object.entries(spec.buildArgs ?? {}).map(([k, v]) => {
    // eslint-disable-next-line no-control-regex
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(k) || /[\x00-\x1f\x7f]/.test(v))
      throw new KilnError('invalid_input', 'bad build argument');
    return `${k}=${v}\n`;
  });
  const buildArgsB64 = argLines.length ? b64(argLines.join('')) : '';
  if (buildArgsB64.length > MAX_PARAM_B64) throw new KilnError('invalid_input', 'build arguments too large');
  const nameLines = (spec.baseNames ?? []).map((m) => {
    if (!IMAGE_NAME_RE.test(m.name) || !IMAGE_NAME_RE.test(m.base))
      throw new KilnError('invalid_input', 'bad base name mapping');
    return `${m.name}=${m.base}\n`;
  });
  const baseNamesB64 = nameLines.length ? b64(nameLines.join('')) : '';
  const firmware = [...new Set(spec.bootFirmware ?? [])];
  if (firmware.some((f) => !(FIRMWARES as readonly string[]).includes(f)))
    throw new KilnError('invalid_input', 'unknown boot firmware');
  if (baseNamesB64.length > MAX_PARAM_B64) throw new KilnError('invalid_input', 'base name mappings too large');
  // Checked against the protocol's schema again: what lands in a parameter is JSON of known fields only.
  const sourceB64 = spec.source ? b64(JSON.stringify(gitSourceSchema.parse(spec.source))) : '';

  const slots: Record<string, string> = {
    description: escapeXml(description),
    ...Object.fromEntries(Object.entries(discarderOf(spec, settings)).map(([k, v]) => [k, String(v)])),
    dockerfileB64,
    contextB64,
    buildArgsB64,
    baseNamesB64,
    sourceB64,
    formats: formats.join(','),
    bootFirmware: firmware.join(','),
    label: escapeXml(settings.label),
    disabled: spec.enabled ? 'false' : 'true',
    timerTrigger: timerFragment(spec),
    timeoutSeconds: String(settings.timeoutSeconds),
    sdkCommand: settings.sdkCommand.map(shellQuote).join(' '),
    artifacts: ARCHIVE_PATTERN,
  };
  const template = jobTemplate();
  return template.replace(/\{\{([A-Za-z0-9]+)\}\}/g, (_m, key: string) => {
    const v = slots[key];
    if (v === undefined) throw new KilnError('internal', `job template has an unknown slot ${key}`);
    return v;
  });
}

const configParser = new XMLParser({
  ignoreAttributes: true,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  isArray: (name) => name === 'hudson.model.StringParameterDefinition' || name === 'hudson.triggers.TimerTrigger',
});

/**
 * What Kiln reads of a job's config.xml as Jenkins returns it: `<disabled>`, the timer's spec, and the string
 * parameters' default values, i.e. what a build triggered without parameters (a timer build) takes: the Dockerfile,
 * context, build arguments, formats, firmwares and base names the job holds now.
 */
export function jobConfig(xml: string): { disabled: boolean; timerSpec?: string; params: Record<string, string> } {
  let doc: unknown;
  try {
    doc = configParser.parse(xml);
  } catch (e) {
    throw new KilnError('internal', "the job's config.xml from Jenkins does not parse", { cause: e });
  }
  type Def = { name?: unknown; defaultValue?: unknown };
  type Project = {
    disabled?: unknown;
    triggers?: { 'hudson.triggers.TimerTrigger'?: Array<{ spec?: unknown }> };
    properties?: Record<string, { parameterDefinitions?: Record<string, Def[]> }>;
  };
  const project = (doc as { project?: Project } | undefined)?.project;
  const defs =
    project?.properties?.['hudson.model.ParametersDefinitionProperty']?.parameterDefinitions?.[
      'hudson.model.StringParameterDefinition'
    ] ?? [];
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const d of defs) {
    if (typeof d.name === 'string') params[d.name] = typeof d.defaultValue === 'string' ? d.defaultValue : '';
  }
  const specs = (project?.triggers?.['hudson.triggers.TimerTrigger'] ?? [])
    .map((t) => (typeof t?.spec === 'string' ? t.spec : ''))
    .filter(Boolean);
  return { disabled: project?.disabled === 'true', ...(specs.length ? { timerSpec: specs.join('\n') } : {}), params };
}

/** The string parameters' default values (jobConfig's `params`). */
export function parameterDefaults(xml: string): Record<string, string> {
  return jobConfig(xml).params;
}
