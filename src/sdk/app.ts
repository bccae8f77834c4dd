import { hostPath, lstatIn, mkdirIn, readdirIn, readFileIn, removeIn, symlinkIn, writeFileIn } from './fsroot.js';
import { promises as fsp } from 'node:fs';
import { KilnError } from '../shared/errors.js';
import { editInittab, renderSysvRunner, type InittabEdit } from './initscript.js';
import type { Reporter } from './reporter.js';
import type { ImageRuntimeConfig } from './runtime/config.js';
import { appNames, KILN_EXEC, KILN_EXEC_SOURCE, type AppNames } from './runtime/kiln-exec.js';
import { describeRuntime, planRuntime, type RuntimePlan } from './runtime/plan.js';
import { appUnit, healthUnits } from './runtime/systemd.js';
import { parseGroup, parsePasswd } from './runtime/user.js';
import { ensureVolumes } from './runtime/volumes.js';

export type { ImageRuntimeConfig } from './runtime/config.js';

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
export interface AppBootCheck {
  expect: RegExp[];
  failOn: RegExp[];
}
export interface AppliedConfig {
  /** For the log and the manifest's notes. */
  notes: string[];
  boot?: AppBootCheck;
  /** The manifest's `runtime` section. */
  runtime: Record<string, unknown>;
}

/** The image's passwd and group, which `docker run` reads at start (a missing or linked file counts as empty). */
async function readAccounts(root: string) {
  const text = async (p: string) => (await readFileIn(root, p, 16 << 20))?.toString('utf8') ?? '';
  return { passwd: parsePasswd(await text('/etc/passwd')), group: parseGroup(await text('/etc/group')) };
}

/**
 * Applies the image's runtime config to the machine (runtime/plan.ts decides, from the config and the image's own
 * passwd/group): VOLUME paths made as Docker makes them, and ENTRYPOINT/CMD (with its HEALTHCHECK and STOPSIGNAL) as
 * a service started at every boot: systemd units, or on sysvinit an /etc/inittab entry and its runner (see
 * initscript.ts for why not an rc script), both starting the program through kiln-exec. What `docker run` would
 * refuse (an unknown USER, ...) fails the build with Docker's reason. `instance` names the service (tests install
 * several into one image); the default makes kiln-app.service / kapp.
 */
export async function applyImageConfig(
  root: string,
  c: ImageRuntimeConfig,
  rep: Reporter,
  instance?: string,
): Promise<AppliedConfig> {
  const names = appNames(instance);
  const plan = planRuntime(c, await readAccounts(root));
  const volumes = await ensureVolumes(root, plan.volumes);
  const notes: string[] = [];
  for (const v of volumes) if (v.state !== 'in the image') notes.push(`VOLUME ${v.path}: ${v.state}`);
  let service: Record<string, unknown> | undefined;
  let boot: AppBootCheck | undefined;
  if (plan.argv) {
    const made = await installService(root, plan, names);
    if (typeof made === 'string') notes.push(`the image has ENTRYPOINT/CMD but ${made}: no service was created for it`);
    else {
      ({ service, boot } = made);
      notes.push(made.note);
    }
  } else if (plan.health) notes.push('HEALTHCHECK ignored: the image has no ENTRYPOINT/CMD that becomes a service');
  for (const n of notes) rep.log(`[kiln] app: ${n}`);
  return { notes, boot, runtime: describeRuntime(plan, { service, volumes }) };
}

/** Writes what starts the program at boot; returns why not when the machine's init is neither systemd nor sysvinit. */
async function installService(
  root: string,
  plan: RuntimePlan,
  names: AppNames,
): Promise<string | { note: string; boot: AppBootCheck; service: Record<string, unknown> }> {
  const kind = await initKind(root);
  if (!kind) return 'the init is neither systemd nor sysvinit';
  const perl = await lstatIn(root, '/usr/bin/perl');
  if (!perl?.isFile() && !perl?.isSymbolicLink()) {
    throw new KilnError(
      'build_failed',
      'The image has no /usr/bin/perl (package perl-base, Essential on Debian and Devuan), which Kiln needs to start ENTRYPOINT/CMD as docker run does: keep perl-base installed',
    );
  }
  await writeFileIn(root, KILN_EXEC, KILN_EXEC_SOURCE, 0o755);
  const argv = JSON.stringify(plan.argv).slice(0, 300);
  const cannotStart = new RegExp(`${names.tag}: cannot start`);
  const healthFile = plan.health ? { statusFile: names.statusFile } : {};
  if (kind === 'sysvinit') {
    if (!(await writeFileIn(root, names.runner, renderSysvRunner({ plan, names }), 0o755)))
      return `${names.runner} cannot be written`;
    const added = await editInittabIn(root, { app: names });
    if (!added) return '/etc/inittab is not a regular file';
    return {
      note: `ENTRYPOINT/CMD run at boot by sysvinit: /etc/inittab entry ${names.inittabId} starts ${names.runner} (restarted on failure): ${argv}`,
      boot: { expect: [new RegExp(`${names.tag}: started as `)], failOn: [cannotStart] },
      service: {
        init: 'sysvinit',
        inittab: `${names.inittabId}:2345:once:${names.runner}`,
        runner: names.runner,
        program: KILN_EXEC,
        ...(plan.health ? { healthcheck: { ...healthFile, runs: `in a loop in ${names.runner}` } } : {}),
      },
    };
  }
  await enableUnit(root, names.unit, appUnit(plan, names));
  if (plan.health) {
    const u = healthUnits(plan, names);
    await writeFileIn(root, `/etc/systemd/system/${names.healthTimer}`, u.timer);
    await writeFileIn(root, `/etc/systemd/system/${names.healthService}`, u.service);
  }
  const unitRe = names.unit.replace(/\./g, '\\.');
  return {
    note: `ENTRYPOINT/CMD run at boot as ${names.unit}: ${argv}`,
    boot: {
      expect: [new RegExp(`Started ${unitRe}`)],
      failOn: [
        new RegExp(`${unitRe}: Unit configuration has fatal error`),
        new RegExp(`Failed to start ${unitRe}`),
        cannotStart,
      ],
    },
    service: {
      init: 'systemd',
      unit: names.unit,
      program: KILN_EXEC,
      ...(plan.health
        ? { healthcheck: { ...healthFile, timer: names.healthTimer, service: names.healthService } }
        : {}),
    },
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
    if ((await lstatIn(root, '/usr/bin/ssh-keygen'))?.isFile() && (await editInittabIn(root, { sshKeygen: true })))
      how = 'new ones are generated at boot by an /etc/inittab sysinit entry (ssh-keygen -A)';
  } else if (kind === 'systemd') {
    await enableUnit(
      root,
      KEYGEN_UNIT,
      [
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
      ].join('\n'),
    );
    await writeFileIn(
      root,
      '/etc/systemd/system/ssh.service.d/kiln-hostkeys.conf',
      `[Unit]\nWants=${KEYGEN_UNIT}\nAfter=${KEYGEN_UNIT}\n`,
    );
    how = `new ones are generated at first boot (${KEYGEN_UNIT})`;
  }
  const note = `SSH host keys reset (${removed.length} removed); ${how}`;
  rep.log(`[kiln] finish: ${note}`);
  return note;
}
