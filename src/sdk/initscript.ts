import { execArgs, healthArgs, KILN_EXEC, HEALTH_RESTART_STATUS, type AppNames } from './runtime/kiln-exec.js';
import type { RuntimePlan } from './runtime/plan.js';

/**
 * ENTRYPOINT/CMD on a sysvinit machine (Debian with sysvinit-core, Devuan).
 *
 * Why an /etc/inittab entry and not an LSB script in /etc/init.d with rc?.d links: on Debian the rc script runs the
 * services in the order of insserv's /etc/init.d/.depend.* files (startpar, CONCURRENCY=makefile), not by link name,
 * so links we make by hand on the build host (update-rc.d cannot run there) are either ignored or renumbered by the
 * next `insserv` a package runs; a script also has to daemonise and keep a pid file. init itself starting a
 * foreground process needs none of that: entries after the `l2:2:wait:/etc/init.d/rc 2` line start once the rc
 * scripts are done (network and ssh up), init gives them a session of their own and sends it SIGTERM when the
 * runlevel ends. The action is `once` and the runner restarts the program after a failure (2 s pause), like
 * systemd's Restart=on-failure; `respawn` would also restart a program that finished successfully, and init
 * disables an entry that respawns 10 times in 2 minutes.
 *
 * The runner is a small /bin/sh script: kiln-exec (runtime/kiln-exec.ts) starts the program exactly as on systemd,
 * in a session of its own, so init's SIGTERM for the entry reaches the runner, which sends the program its
 * STOPSIGNAL and SIGKILL after the stop timeout (docker stop's order; init's own grace period bounds it). A
 * HEALTHCHECK runs in a loop beside the program (sysvinit has no timers): `interval` after the start and after each
 * check, and after `retries` failures in a row the runner stops the program that way and starts it again.
 */
export const INITTAB_GETTY_ID = 'kS0';
export const INITTAB_SSH_ID = 'kssh';

/** Quotes one word for /bin/sh: single quotes, each `'` as `'\''`. Nothing inside is expanded or split. */
export function shQuote(s: string): string {
  if (s.includes('\0')) throw new Error('a shell word cannot hold a NUL byte');
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface SysvRunnerInput {
  plan: RuntimePlan;
  names: AppNames;
  /** Where the runner's lines and the program's output go; the boot test reads the console (tests use a file). */
  console?: string;
  /** Guest path of kiln-exec (tests run it from elsewhere). */
  kilnExec?: string;
}

/** The runner /etc/inittab starts. Every image-supplied string is a single-quoted word. */
export function renderSysvRunner(i: SysvRunnerInput): string {
  const { plan, names } = i;
  const q = shQuote;
  const exec = q(i.kilnExec ?? KILN_EXEC);
  const t = plan.stop.timeoutSeconds;
  const id = plan.identity!;
  const h = plan.health;
  return [
    '#!/bin/sh',
    `# Added by Kiln: runs what \`docker run\` of this image would run, started by init from /etc/inittab (${names.inittabId}).`,
    '# kiln-exec sets user, groups, environment and directory as docker run does (manifest.json "runtime" says how).',
    '# Every word taken from the image is single-quoted: this shell neither expands nor splits it.',
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
    'export PATH',
    `exec </dev/null >>${q(i.console ?? '/dev/console')} 2>&1`,
    'kiln_pid= kiln_killer= kiln_stopping= kiln_restart=',
    // docker stop: the stop signal to the program alone, SIGKILL once the stop timeout has passed.
    'kiln_stop_program() {',
    `  [ -z "$kiln_pid" ] || kill -${plan.stop.number} "$kiln_pid" 2>/dev/null`,
    ...(t === null
      ? []
      : [`  [ -z "$kiln_pid" ] || { ( sleep ${t}; kill -9 "$kiln_pid" 2>/dev/null ) & kiln_killer=$!; }`]),
    '}',
    "trap 'kiln_stopping=1; kiln_stop_program' TERM INT",
    ...(h
      ? ['# The health loop asks for a restart with SIGUSR1.', "trap 'kiln_restart=1; kiln_stop_program' USR1"]
      : []),
    'while :; do',
    `  printf '%s: started as %s (uid %s gid %s) in %s\\n' ${q(names.tag)} ${q(id.spec || 'root')} ${id.uid} ${id.gid} ${q(plan.workdir)}`,
    ...(h ? [`  ${exec} ${q(`--health-reset=${names.statusFile}`)}`] : []),
    `  ${exec} ${execArgs(plan, names, plan.argv!).map(q).join(' ')} &`,
    '  kiln_pid=$!',
    ...(h
      ? [
          `  ( while sleep ${h.intervalMs / 1000}; do ${exec} ${healthArgs(plan, names, { console: i.console }).map(q).join(' ')} >/dev/null`,
          `      [ $? -ne ${HEALTH_RESTART_STATUS} ] || { kill -USR1 $$; exit 0; }`,
          '    done ) &',
          '  kiln_health=$!',
        ]
      : []),
    // A trapped signal interrupts wait while the program still runs (or is not reaped yet): wait again.
    '  kiln_rc=',
    '  while [ -z "$kiln_rc" ]; do',
    '    wait "$kiln_pid"',
    '    kiln_status=$?',
    '    kill -0 "$kiln_pid" 2>/dev/null || kiln_rc=$kiln_status',
    '  done',
    '  [ -z "$kiln_killer" ] || kill "$kiln_killer" 2>/dev/null',
    '  kiln_pid= kiln_killer=',
    ...(h ? ['  kill "$kiln_health" 2>/dev/null'] : []),
    '  [ -z "$kiln_stopping" ] || exit 0',
    ...(h
      ? [
          `  if [ -n "$kiln_restart" ]; then kiln_restart=; echo ${q(`${names.tag}: restarted after failed health checks`)}; continue; fi`,
        ]
      : []),
    `  if [ "$kiln_rc" -eq 0 ]; then echo ${q(`${names.tag}: exited with status 0, not restarted`)}; exit 0; fi`,
    '  case $kiln_rc in',
    `    126|127) echo "${names.tag}: cannot start: the command was not found or is not executable (status $kiln_rc), retrying in 2 s" ;;`,
    `    *) echo "${names.tag}: exited with status $kiln_rc, restarting in 2 s" ;;`,
    '  esac',
    '  sleep 2',
    'done',
    '',
  ].join('\n');
}

export interface InittabLine {
  id: string;
  runlevels: string;
  action: string;
  process: string;
}

export function parseInittab(text: string): (InittabLine | undefined)[] {
  return text.split('\n').map((l) => {
    if (/^\s*(#|$)/.test(l)) return undefined;
    const m = /^([^:]*):([^:]*):([^:]*):(.*)$/.exec(l);
    return m ? { id: m[1]!, runlevels: m[2]!, action: m[3]!, process: m[4]! } : undefined;
  });
}

export interface InittabEdit {
  /** Run ENTRYPOINT/CMD through its runner. */
  app?: AppNames;
  /** Make sure a getty runs on ttyS0 (the boot test's serial console). */
  serialGetty?: boolean;
  /** Generate missing SSH host keys before the runlevel's rc scripts start ssh. */
  sshKeygen?: boolean;
}

/**
 * Edits /etc/inittab text, idempotently: an entry with our id is replaced, never doubled; the serial getty is only
 * added when no active line already runs a getty on ttyS0. Returns the new text and what was added.
 */
export function editInittab(text: string, e: InittabEdit): { text: string; added: string[] } {
  const lines = text.replace(/\n$/, '').split('\n');
  const parsed = () => parseInittab(lines.join('\n'));
  const added: string[] = [];
  const put = (line: string, after?: (l: InittabLine) => boolean) => {
    const id = line.slice(0, line.indexOf(':'));
    const p = parsed();
    const same = p.findIndex((l) => l?.id === id);
    if (same >= 0) {
      lines[same] = line;
      added.push(line);
      return;
    }
    const anchor = after ? p.findIndex((l) => !!l && after(l)) : -1;
    if (anchor >= 0) lines.splice(anchor + 1, 0, line);
    else lines.push(line);
    added.push(line);
  };
  if (e.sshKeygen) {
    // sysinit entries run before any runlevel; after rcS, the root filesystem is writable and /run is mounted.
    put(
      `${INITTAB_SSH_ID}::sysinit:/usr/bin/ssh-keygen -A`,
      (l) => l.action === 'sysinit' && /\/etc\/init\.d\/rcS\b/.test(l.process),
    );
  }
  if (e.serialGetty) {
    const has = parsed().some(
      (l) =>
        l &&
        l.id !== INITTAB_GETTY_ID &&
        /getty/.test(l.process) &&
        /(^|[\s/])ttyS0(\s|$)/.test(l.process) &&
        l.action === 'respawn',
    );
    if (!has) put(`${INITTAB_GETTY_ID}:2345:respawn:/sbin/getty -L ttyS0 115200 vt102`);
  }
  if (e.app) put(`${e.app.inittabId}:2345:once:${e.app.runner}`);
  return { text: lines.join('\n') + '\n', added };
}
