import { execArgs, healthArgs, KILN_EXEC, type AppNames } from './kiln-exec.js';
import type { RuntimePlan } from './plan.js';

/**
 * The systemd units for ENTRYPOINT/CMD and its HEALTHCHECK. systemd only starts and stops: identity, environment,
 * directory and lookup are kiln-exec's (see kiln-exec.ts for why not User=/Environment=/WorkingDirectory=). Every
 * word taken from the image is quoted by systemdQuote, so no word is split, no specifier or variable expanded, and
 * no line injected.
 */

/** Quotes one word for a systemd unit file: double quotes, C escapes, `%` and `$` doubled (no specifiers/expansion). */
export function systemdQuote(s: string): string {
  const body = s
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t')
    // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
    .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(/%/g, '%%')
    .replace(/\$/g, '$$$$');
  return `"${body}"`;
}

const command = (words: string[]) => `${KILN_EXEC} ${words.map(systemdQuote).join(' ')}`;

/**
 * The application: started once the network is up, restarted 2 s after a failure (a machine has no `docker run
 * --restart`; a clean exit stays down). Stopping sends STOPSIGNAL to the main process only and SIGKILL to what is
 * left after the stop timeout, as `docker stop` does (KillMode=mixed). Output goes to the journal and the console.
 */
export function appUnit(plan: RuntimePlan, names: AppNames): string {
  const h = plan.health;
  return [
    '# Added by Kiln: runs what `docker run` of this image would run, at every boot (manifest.json "runtime" says how).',
    '[Unit]',
    'Description=Kiln application (ENTRYPOINT/CMD of the image)',
    'After=network.target',
    ...(h ? [`Wants=${names.healthTimer}`] : []),
    '',
    '[Service]',
    'Type=exec',
    ...(h ? [`ExecStartPre=${command([`--health-reset=${names.statusFile}`])}`] : []),
    `ExecStart=${command(execArgs(plan, names, plan.argv!))}`,
    `SyslogIdentifier=${names.tag}`,
    'StandardInput=null',
    'StandardOutput=journal+console',
    'StandardError=journal+console',
    'KillMode=mixed',
    `KillSignal=${plan.stop.name}`,
    `TimeoutStopSec=${plan.stop.timeoutSeconds ?? 'infinity'}`,
    'Restart=on-failure',
    'RestartSec=2',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/**
 * HEALTHCHECK: a timer that runs the check `interval` after the application starts and `interval` after each check
 * ends (it starts and stops with the application), and a oneshot service that runs one check through kiln-exec.
 * The result goes to the journal, a line on the console when the state changes, and the status file; after
 * `retries` failures in a row the check restarts the application.
 */
export function healthUnits(plan: RuntimePlan, names: AppNames): { timer: string; service: string } {
  const h = plan.health!;
  const header = `# Added by Kiln: the image's HEALTHCHECK for ${names.unit}; its state is in ${names.statusFile}.`;
  return {
    timer: [
      header,
      '[Unit]',
      `Description=Kiln health check timer for ${names.unit}`,
      `BindsTo=${names.unit}`,
      `After=${names.unit}`,
      '',
      '[Timer]',
      `OnActiveSec=${h.intervalMs}ms`,
      `OnUnitInactiveSec=${h.intervalMs}ms`,
      'AccuracySec=1ms',
      '',
    ].join('\n'),
    service: [
      header,
      '[Unit]',
      `Description=Kiln health check of ${names.unit} (HEALTHCHECK of the image)`,
      '',
      '[Service]',
      'Type=oneshot',
      `ExecStart=${command(healthArgs(plan, names, { restartUnit: names.unit }))}`,
      // kiln-exec enforces the check's own timeout.
      'TimeoutStartSec=infinity',
      `SyslogIdentifier=${names.tag}-health`,
      '',
    ].join('\n'),
  };
}
