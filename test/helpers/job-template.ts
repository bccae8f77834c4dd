import {
  ARCHIVE_PATTERN,
  describe as describeJob,
  type TemplateSettings,
} from '../../src/glue/backends/jenkins/template.js';
import type { JobSpec } from '../../src/protocol/index.js';

/** The Jenkins job template's settings as the template tests render it. */
export const TEMPLATE_SETTINGS: TemplateSettings = {
  label: 'kiln-builder',
  keepBuilds: 20,
  retention: { keepBuilds: 5, keepDays: 0 },
  timeoutSeconds: 3600,
  sdkCommand: ['/usr/local/bin/kiln', 'sdk', 'build'],
};

/**
 * The text each `{{slot}}` of jenkins/job.xml must hold once job `job` is rendered from `spec` with
 * TEMPLATE_SETTINGS (no context, no base names, no schedule, enabled): the one oracle of the template tests, so a
 * slot the template gains is added here once.
 */
export function expectedSlots(job: number, spec: JobSpec): Record<string, string> {
  const args = Object.entries(spec.buildArgs ?? {})
    .map(([k, v]) => `${k}=${v}\n`)
    .join('');
  return {
    description: describeJob(job, spec),
    numToKeep: '20',
    artifactNumToKeep: '5',
    artifactDaysToKeep: '-1',
    dockerfileB64: Buffer.from(spec.dockerfile).toString('base64'),
    contextB64: '',
    buildArgsB64: args ? Buffer.from(args).toString('base64') : '',
    baseNamesB64: '',
    sourceB64: '',
    formats: spec.formats.join(','),
    bootFirmware: '',
    label: 'kiln-builder',
    disabled: 'false',
    timerTrigger: '',
    timeoutSeconds: '3600',
    sdkCommand: "'/usr/local/bin/kiln' 'sdk' 'build'",
    artifacts: ARCHIVE_PATTERN,
  };
}
