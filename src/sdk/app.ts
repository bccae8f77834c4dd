import { hostPath, lstatIn, mkdirIn, readdirIn, readFileIn, removeIn, symlinkIn, writeFileIn } from './fsroot.js';
import { promises as fsp } from 'node:fs';
import { editInittab, INITTAB_APP_ID, renderSysvRunner, SYSV_RUNNER, sysvRunnerProblem, USER_NAME, type InittabEdit } from './initscript.js';
import type { Reporter } from './reporter.js';

export interface ImageRuntimeConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string> | null;
}

export const APP_UNIT = 'kiln-app.service';
export const APP_DESCRIPTION = 'Kiln application (ENTRYPOINT/CMD of the image)';

const SHELLS = new Set(['bash', 'sh', '/bin/bash', '/bin/sh', '/usr/bin/bash', '/usr/bin/sh', 'dash', '/bin/dash']);
const INITS = new Set(['/sbin/init', '/usr/sbin/init', '/lib/systemd/systemd', '/usr/lib/systemd/systemd', 'init', 'systemd']);

/**
 * The command a container of this image runs, or undefined when there is none worth a service: no ENTRYPOINT and
 * a CMD that is just an interactive shell (what base images ship) or an init (the image already boots as a machine).
 */
export function appCommand(c: ImageRuntimeConfig): string[] | undefined {
  const argv = [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])];
  if (!argv.length) return undefined;
  if (!c.Entrypoint?.length && argv.length === 1 && SHELLS.has(argv[0]!)) return undefined;
  if (INITS.has(argv[0]!)) return undefined;
  return argv;
}

/** Quotes one word for a systemd unit file: double quotes, C escapes, `%` and `$` doubled (no specifiers/expansion). */
export function systemdQuote(s: string): string {
  const body = s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t')
    .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`)
    .replace(/%/g, '%%').replace(/\$/g, '$$$$');
  return `"${body}"`;
}

export function appUnit(argv: string[], c: ImageRuntimeConfig): string {
  const lines = [
    '# Added by Kiln: runs what `docker run` of this image would run, at every boot.',
    '[Unit]',
    `Description=${APP_DESCRIPTION}`,
    'After=network.target',
    '',
    '[Service]',
    'Type=exec',
    `ExecStart=${argv.map(systemdQuote).join(' ')}`,
  ];
  // WorkingDirectory takes a bare absolute path (no quotes); only specifiers need escaping.
  const wd = c.WorkingDir && c.WorkingDir.startsWith('/') && !/[\x00-\x1f\x7f]/.test(c.WorkingDir) ? c.WorkingDir : '/';
  lines.push(`WorkingDirectory=${wd.replace(/%/g, '%%')}`);
  const user = (c.User ?? '').trim();
  if (user && user !== 'root' && user !== '0' && user !== '0:0') {
    const [u, g] = user.split(':');
    if (u && USER_NAME.test(u)) lines.push(`User=${u}`);
    if (g && USER_NAME.test(g)) lines.push(`Group=${g}`);
  }
  for (const e of c.Env ?? []) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(e)) continue;
    lines.push(`Environment=${systemdQuote(e)}`);
  }
  lines.push('Restart=on-failure', 'RestartSec=2', 'StandardOutput=journal+console', 'StandardError=journal+console', '', '[Install]', 'WantedBy=multi-user.target', '');
  return lines.join('\n');
}

/** Writes a systemd unit into the guest and enables it in multi-user.target (what `systemctl enable` would link). */
async function enableUnit(root: string, name: string, text: string): Promise<void> {
  await writeFileIn(root, `/etc/systemd/system/${name}`, text);
  await mkdirIn(root, '/etc/systemd/system/multi-user.target.wants');
  await symlinkIn(root, `/etc/systemd/system/multi-user.target.wants/${name}`, `/etc/systemd/system/${name}`);
}

async function hasSystemd(root: string): Promise<boolean> {
  for (const p of ['/usr/lib/systemd/systemd', '/lib/systemd/systemd']) {
    const st = await lstatIn(root, p);
    if (st?.isFile()) return true;
  }
  return false;
}

export type InitKind = 'systemd' | 'sysvinit';

/**
 * Which init the machine will run: the kernel starts /sbin/init (on merged-/usr images /sbin is a link, so
 * /usr/sbin/init is looked at first). systemd-sysv makes it a link to systemd; sysvinit-core makes it the sysvinit
 * binary (it names itself INIT_VERSION=sysvinit-...) reading /etc/inittab. An image with the systemd binary but
 * sysvinit as /sbin/init boots sysvinit, so the binary's presence alone does not decide.
 */
export async function initKind(root: string): Promise<InitKind | undefined> {
  for (const p of ['/usr/sbin/init', '/sbin/init']) {
    const st = await lstatIn(root, p);
    if (!st) continue;
    if (st.isSymbolicLink()) {
      const hp = await hostPath(root, p);
      const target = hp ? await fsp.readlink(hp).catch(() => '') : '';
      if (/(^|\/)systemd$/.test(target)) return 'systemd';
      continue;
    }
    if (st.isFile()) {
      const bin = await readFileIn(root, p, 8 << 20);
      const inittab = await lstatIn(root, '/etc/inittab');
      if (bin?.includes('sysvinit') && inittab?.isFile()) return 'sysvinit';
      break;
    }
  }
  return (await hasSystemd(root)) ? 'systemd' : undefined;
}

/** Edits the guest's /etc/inittab through fsroot (no link followed); undefined when it is not a regular file. */
async function editInittabIn(root: string, e: InittabEdit): Promise<string[] | undefined> {
  const cur = await readFileIn(root, '/etc/inittab', 1 << 20);
  if (!cur) return undefined;
  const { text, added } = editInittab(cur.toString('utf8'), e);
  await writeFileIn(root, '/etc/inittab', text, 0o644);
  return added;
}

/**
 * A sysvinit machine starts no getty on the serial port by itself (systemd does, for the kernel's console), yet the
 * boot test and a headless VM's user log in there: add one unless the image already has it. Called by finishRootfs.
 */
export async function ensureSerialGetty(root: string, rep: Reporter): Promise<void> {
  if ((await initKind(root)) !== 'sysvinit') return;
  const added = await editInittabIn(root, { serialGetty: true });
  if (added?.length) rep.log(`[kiln] finish: sysvinit: getty on ttyS0 added to /etc/inittab (${added.join('; ')})`);
}

/** What the boot test must see on the console when the image has an app service, and what fails it at once. */
export interface AppBootCheck { expect: RegExp[]; failOn: RegExp[] }
export interface AppService { note: string; boot?: AppBootCheck }

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'];

/**
 * Turns ENTRYPOINT/CMD into a service started at every boot: an enabled systemd unit, or on sysvinit an
 * /etc/inittab entry running /etc/kiln/app.sh (see initscript.ts for why not an rc script). Returns a note for the
 * log/manifest and what the boot test should look for, or undefined when the image has no command worth a service.
 */
export async function installAppService(root: string, c: ImageRuntimeConfig, rep: Reporter): Promise<AppService | undefined> {
  const argv = appCommand(c);
  if (!argv) return undefined;
  const kind = await initKind(root);
  const skip = (why: string): AppService => {
    const note = `the image has ENTRYPOINT/CMD but ${why}: no service was created for it`;
    rep.log(`[kiln] app: ${note}`);
    return { note };
  };
  if (kind === 'sysvinit') {
    let setpriv: string | undefined;
    for (const p of SETPRIV) if ((await lstatIn(root, p))?.isFile()) { setpriv = p; break; }
    if (!setpriv) return skip('no setpriv (package util-linux) to run it as USER');
    const input = { argv, config: c, setpriv };
    const problem = sysvRunnerProblem(input);
    if (problem) return skip(problem);
    if (!(await writeFileIn(root, SYSV_RUNNER, renderSysvRunner(input), 0o755))) return skip(`${SYSV_RUNNER} cannot be written`);
    const added = await editInittabIn(root, { app: true });
    if (!added) return skip('/etc/inittab is not a regular file');
    const note = `ENTRYPOINT/CMD run at boot by sysvinit: /etc/inittab entry ${INITTAB_APP_ID} starts ${SYSV_RUNNER} (restarted on failure): ${JSON.stringify(argv).slice(0, 300)}`;
    rep.log(`[kiln] app: ${note}`);
    return { note, boot: { expect: [/kiln-app: started as /], failOn: [/kiln-app: cannot start/] } };
  }
  if (kind !== 'systemd') return skip('neither systemd nor sysvinit');
  await enableUnit(root, APP_UNIT, appUnit(argv, c));
  const note = `ENTRYPOINT/CMD run at boot as ${APP_UNIT}: ${JSON.stringify(argv).slice(0, 300)}`;
  rep.log(`[kiln] app: ${note}`);
  return {
    note,
    boot: { expect: [/Started kiln-app\.service/], failOn: [/kiln-app\.service: Unit configuration has fatal error/, /Failed to start kiln-app\.service/] },
  };
}

const KEYGEN_UNIT = 'kiln-ssh-hostkeys.service';

/** Deletes SSH host keys baked into the image (every copy would share them) and regenerates them at first boot. */
export async function resetSshHostKeys(root: string, rep: Reporter): Promise<string | undefined> {
  const removed: string[] = [];
  for (const n of await readdirIn(root, '/etc/ssh')) {
    if (/^ssh_host_.*key(\.pub)?$/.test(n) && (await removeIn(root, `/etc/ssh/${n}`))) removed.push(n);
  }
  const sshd = (await lstatIn(root, '/usr/sbin/sshd')) ?? (await lstatIn(root, '/sbin/sshd'));
  if (!sshd && !removed.length) return undefined;
  const kind = await initKind(root);
  let how = 'nothing in the image regenerates them (no ssh-keygen or no known init)';
  if (kind === 'sysvinit') {
    // Debian's /etc/init.d/ssh does not make missing keys (sshd -t then fails and ssh stays down): a sysinit entry
    // runs `ssh-keygen -A` (only missing keys) after rcS, before the runlevel's rc scripts start ssh.
    if ((await lstatIn(root, '/usr/bin/ssh-keygen'))?.isFile() && (await editInittabIn(root, { sshKeygen: true }))) how = 'new ones are generated at boot by an /etc/inittab sysinit entry (ssh-keygen -A)';
  } else if (kind === 'systemd') {
    await enableUnit(root, KEYGEN_UNIT, [
      '# Added by Kiln: host keys are made on the machine, never shipped in the image.',
      '[Unit]',
      'Description=Generate SSH host keys (Kiln first boot)',
      'Before=ssh.service sshd.service',
      'ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key',
      '',
      '[Service]',
      'Type=oneshot',
      'ExecStart=/usr/bin/ssh-keygen -A',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      '',
    ].join('\n'));
    await writeFileIn(root, '/etc/systemd/system/ssh.service.d/kiln-hostkeys.conf', `[Unit]\nWants=${KEYGEN_UNIT}\nAfter=${KEYGEN_UNIT}\n`);
    how = `new ones are generated at first boot (${KEYGEN_UNIT})`;
  }
  const note = `SSH host keys reset (${removed.length} removed); ${how}`;
  rep.log(`[kiln] finish: ${note}`);
  return note;
}
