import type { ImageRuntimeConfig } from './app.js';

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
 * Why setpriv: it is in util-linux, which is Essential on Debian and Devuan (always there), it executes the program
 * directly (no shell, no PAM session like runuser/su, no "already running" process matching like
 * start-stop-daemon), and sets uid, gid and supplementary groups exactly as asked.
 */
export const SYSV_RUNNER = '/etc/kiln/app.sh';
export const INITTAB_APP_ID = 'kapp';
export const INITTAB_GETTY_ID = 'kS0';
export const INITTAB_SSH_ID = 'kssh';
/** What a container gets when its image sets no PATH (Docker's default). */
export const DOCKER_DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Quotes one word for /bin/sh: single quotes, each `'` as `'\''`. Nothing inside is expanded or split. */
export function shQuote(s: string): string {
  if (s.includes('\0')) throw new Error('a shell word cannot hold a NUL byte');
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** A USER (or group) word Kiln will pass on: a Unix name or a numeric id. */
export const USER_NAME = /^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}|\d{1,10})$/;

export interface SysvRunnerInput {
  argv: string[];
  config: ImageRuntimeConfig;
  /** Guest path of setpriv (found in the image at build time; the image's own PATH may not reach it). */
  setpriv: string;
  /** Where the program's output goes; the boot test reads the console (tests point it at a file). */
  console?: string;
}

/**
 * Why the runner cannot be made, or undefined: a NUL byte cannot live in a shell word (nor in an argv or
 * environment string of the guest), and USER must be a name or a number (`user` or `user:group`).
 */
export function sysvRunnerProblem(i: SysvRunnerInput): string | undefined {
  if ([...i.argv, ...(i.config.Env ?? []), i.config.WorkingDir ?? '', i.config.User ?? ''].some((w) => w.includes('\0'))) return 'a NUL byte in ENTRYPOINT/CMD, ENV, WORKDIR or USER';
  const { user, group } = splitUser(i.config.User);
  if (!USER_NAME.test(user) || (group !== undefined && !USER_NAME.test(group))) return `USER ${JSON.stringify(i.config.User)} is not a user name or id (optionally :group)`;
  return undefined;
}

function splitUser(u: string | undefined): { user: string; group?: string } {
  const s = (u ?? '').trim();
  if (!s) return { user: 'root' };
  const i = s.indexOf(':');
  return i < 0 ? { user: s } : { user: s.slice(0, i), group: s.slice(i + 1) };
}

/**
 * The runner /etc/inittab starts: resolves USER in the guest's own passwd/group at boot (as Docker does at
 * container start), enters WORKDIR, clears the environment to Docker's (PATH, HOME, then the image's ENV) and runs
 * the argv through setpriv, restarting it after a failure. Every image-supplied string is a single-quoted word.
 */
export function renderSysvRunner(i: SysvRunnerInput): string {
  const problem = sysvRunnerProblem(i);
  if (problem) throw new Error(problem);
  const { user, group } = splitUser(i.config.User);
  const wd = i.config.WorkingDir && i.config.WorkingDir.startsWith('/') ? i.config.WorkingDir : '/';
  // Docker keeps only NAME=value entries; a name cannot hold `=` and must not look like an option to env.
  const env = (i.config.Env ?? []).filter((e) => /^[^=-][^=]*=/.test(e));
  const envWords = [`PATH=${DOCKER_DEFAULT_PATH}`, 'HOME=$kiln_home', ...env];
  const q = shQuote;
  return [
    '#!/bin/sh',
    `# Added by Kiln: runs what \`docker run\` of this image would run, started by init from /etc/inittab (${INITTAB_APP_ID}).`,
    '# Every word taken from the image is single-quoted: this shell neither expands nor splits it.',
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
    'export PATH',
    `exec </dev/null >${q(i.console ?? '/dev/console')} 2>&1`,
    `kiln_user=${q(user)}`,
    `kiln_group=${q(group ?? '')}`,
    `kiln_workdir=${q(wd)}`,
    'kiln_fail() { printf \'kiln-app: cannot start: %s\\n\' "$*"; exit 1; }',
    'if kiln_pw=$(getent passwd "$kiln_user"); then',
    '  kiln_uid=$(printf \'%s\\n\' "$kiln_pw" | cut -d: -f3)',
    '  kiln_gid=$(printf \'%s\\n\' "$kiln_pw" | cut -d: -f4)',
    '  kiln_home=$(printf \'%s\\n\' "$kiln_pw" | cut -d: -f6)',
    '  kiln_groups=--init-groups',
    'else',
    '  # Docker runs a numeric USER missing from /etc/passwd with gid 0 and HOME=/.',
    '  case $kiln_user in',
    '    \'\'|*[!0-9]*) kiln_fail "USER $kiln_user is not in /etc/passwd" ;;',
    '  esac',
    '  kiln_uid=$kiln_user kiln_gid=0 kiln_home=/ kiln_groups=--clear-groups',
    'fi',
    'if [ -n "$kiln_group" ]; then',
    '  case $kiln_group in',
    '    *[!0-9]*) kiln_gid=$(getent group "$kiln_group" | cut -d: -f3); [ -n "$kiln_gid" ] || kiln_fail "group $kiln_group is not in /etc/group" ;;',
    '    *) kiln_gid=$kiln_group ;;',
    '  esac',
    'fi',
    'cd "$kiln_workdir" || kiln_fail "WORKDIR $kiln_workdir cannot be entered"',
    'while :; do',
    '  printf \'kiln-app: started as %s (uid %s gid %s) in %s\\n\' "$kiln_user" "$kiln_uid" "$kiln_gid" "$kiln_workdir"',
    // HOME is the one word expanded here (from the guest's passwd); the image's ENV may override it, as in Docker.
    `  /usr/bin/env -i -- ${envWords.map((w) => (w === 'HOME=$kiln_home' ? '"HOME=$kiln_home"' : q(w))).join(' ')} \\`,
    `    ${q(i.setpriv)} --reuid="$kiln_uid" --regid="$kiln_gid" "$kiln_groups" -- ${i.argv.map(q).join(' ')}`,
    '  kiln_rc=$?',
    '  if [ "$kiln_rc" -eq 0 ]; then echo \'kiln-app: exited with status 0, not restarted\'; exit 0; fi',
    '  case $kiln_rc in',
    '    126|127) echo "kiln-app: cannot start: the command was not found or is not executable (status $kiln_rc), retrying in 2 s" ;;',
    '    *) echo "kiln-app: exited with status $kiln_rc, restarting in 2 s" ;;',
    '  esac',
    '  sleep 2',
    'done',
    '',
  ].join('\n');
}

export interface InittabLine { id: string; runlevels: string; action: string; process: string }

export function parseInittab(text: string): (InittabLine | undefined)[] {
  return text.split('\n').map((l) => {
    if (/^\s*(#|$)/.test(l)) return undefined;
    const m = /^([^:]*):([^:]*):([^:]*):(.*)$/.exec(l);
    return m ? { id: m[1]!, runlevels: m[2]!, action: m[3]!, process: m[4]! } : undefined;
  });
}

export interface InittabEdit {
  /** Run ENTRYPOINT/CMD through the runner. */
  app?: boolean;
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
    if (same >= 0) { lines[same] = line; added.push(line); return; }
    const anchor = after ? p.findIndex((l) => !!l && after(l)) : -1;
    if (anchor >= 0) lines.splice(anchor + 1, 0, line);
    else lines.push(line);
    added.push(line);
  };
  if (e.sshKeygen) {
    // sysinit entries run before any runlevel; after rcS, the root filesystem is writable and /run is mounted.
    put(`${INITTAB_SSH_ID}::sysinit:/usr/bin/ssh-keygen -A`, (l) => l.action === 'sysinit' && /\/etc\/init\.d\/rcS\b/.test(l.process));
  }
  if (e.serialGetty) {
    const has = parsed().some((l) => l && l.id !== INITTAB_GETTY_ID && /getty/.test(l.process) && /(^|[\s/])ttyS0(\s|$)/.test(l.process) && l.action === 'respawn');
    if (!has) put(`${INITTAB_GETTY_ID}:2345:respawn:/sbin/getty -L ttyS0 115200 vt102`);
  }
  if (e.app) put(`${INITTAB_APP_ID}:2345:once:${SYSV_RUNNER}`);
  return { text: lines.join('\n') + '\n', added };
}
