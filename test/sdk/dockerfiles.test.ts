import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { run } from '../../src/shared/subprocess.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Real builds of the example Dockerfiles, each boot-tested by the SDK itself (raw only, to keep CI time down; the
 * debian-minimal e2e covers qcow2). The kernel layer is the same instruction as debian-minimal's, so the engine's
 * layer cache makes most of these quick after the first.
 */
const repo = path.resolve(import.meta.dirname, '../..');
const t = tempDir('kiln-sdk-df-');
afterAll(() => t.cleanup());

interface Built {
  code: number | null;
  out: string;
  result: {
    ok: boolean;
    error?: { message: string };
    bootTests: { artifact: string; firmware: string; passed: boolean; reason?: string }[];
  };
  log: string;
  serial: string;
  manifest: {
    notes: string[];
    os: { versionCodename: string };
    packages?: { name: string }[];
    runtime?: Record<string, unknown>;
  };
}

function build(name: string, extra: string[] = [], formats = 'raw', firmware = 'bios'): Promise<Built> {
  const out = path.join(t.dir, name);
  return new Promise((resolve, reject) => {
    const p = spawn(
      path.join(repo, 'bin/kiln'),
      [
        'sdk',
        'build',
        '--dockerfile',
        path.join(repo, 'dockerfiles', name, 'Dockerfile'),
        '--out',
        out,
        '--format',
        formats,
        '--boot-firmware',
        firmware,
        ...extra,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, KILN_SDK_BOOT_TIMEOUT_SECONDS: '300' } },
    );
    p.on('error', reject);
    p.on('close', async (code) => {
      try {
        const read = (f: string) => fsp.readFile(path.join(out, f), 'utf8').catch(() => '');
        resolve({
          code,
          out,
          result: JSON.parse(await read('result.json')),
          log: await read('build.log'),
          serial: await read('serial-image.raw.log'),
          manifest: JSON.parse((await read('manifest.json')) || '{}'),
        });
      } catch (e) {
        reject(e);
      }
    });
  });
}

function expectBooted(b: Built): void {
  expect(b.result.error?.message).toBeUndefined();
  expect(b.result.ok).toBe(true);
  expect(b.code).toBe(0);
  expect(b.result.bootTests[0]!.passed).toBe(true);
}

async function catFromImage(raw: string, guestPath: string): Promise<{ code: number | null; text: string }> {
  const pt = JSON.parse((await run('sfdisk', ['-J', raw], { timeoutMs: 30_000 })).stdout) as {
    partitiontable: { partitions: { start: number; type: string }[] };
  };
  const start = pt.partitiontable.partitions.find(
    (p) => p.type === '83' || /^4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709$/i.test(p.type),
  )!.start;
  const r = await run('debugfs', ['-R', `cat ${guestPath}`, `${raw}?offset=${start * 512}`], { timeoutMs: 30_000 });
  return { code: r.code, text: r.stdout };
}

const LONG = 900_000;

describe('example Dockerfiles build and boot', () => {
  it(
    'app-multistage: CMD of a multi-stage build runs as a service after boot (with a --build-arg), also from the live ISO under BIOS and UEFI',
    async () => {
      const b = await build('app-multistage', ['--build-arg', 'GREETING=from-the-test'], 'raw,iso', 'bios,uefi');
      expectBooted(b);
      expect(b.result.bootTests.map((x) => `${x.artifact} ${x.firmware} ${x.passed}`).sort()).toEqual([
        'image.iso bios true',
        'image.iso uefi true',
        'image.raw bios true',
        'image.raw uefi true',
      ]);
      for (const log of ['serial-image.iso.log', 'serial-image.iso-uefi.log']) {
        const isoSerial = await fsp.readFile(path.join(b.out, log), 'latin1');
        expect(isoSerial).toMatch(/boot=live/);
        expect(isoSerial).toContain('kiln-demo-app: running, greeting=from-the-test');
      }
      // The UEFI boot really went through OVMF, from the CD's El Torito EFI image.
      expect(await fsp.readFile(path.join(b.out, 'serial-image.iso-uefi.log'), 'latin1')).toMatch(
        /BdsDxe: starting Boot\d+ "UEFI QEMU DVD-ROM/,
      );
      expect(b.serial).toMatch(/Started .*kiln-app\.service/);
      expect(b.serial).toContain('kiln-demo-app: running, greeting=from-the-test');
      expect(b.manifest.notes.join('\n')).toContain('kiln-app.service');
    },
    LONG,
  );

  it(
    'user-workdir-env: CMD ["./run.sh"] in WORKDIR runs as USER with ENV; STOPSIGNAL, HEALTHCHECK, EXPOSE, VOLUME and LABEL are in the manifest',
    async () => {
      const b = await build('user-workdir-env');
      expectBooted(b);
      expect(b.serial).toContain(
        'kiln-env-app: user=appuser pwd=/srv/app home=/home/appuser greeting=hello from ENV mode=production',
      );
      expect(b.manifest.runtime).toMatchObject({
        service: {
          init: 'systemd',
          unit: 'kiln-app.service',
          program: '/usr/lib/kiln/kiln-exec',
          healthcheck: {
            timer: 'kiln-app-health.timer',
            service: 'kiln-app-health.service',
            statusFile: '/run/kiln/kiln-app.health',
          },
        },
        argv: ['./run.sh'],
        user: { spec: 'appuser', uid: 1000, gid: 1000, groups: [1000] },
        workdir: '/srv/app',
        env: [
          'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
          "HOSTNAME=<the machine's hostname>",
          'GREETING=hello from ENV',
          'APP_MODE=production',
          'HOME=/home/appuser',
        ],
        stopSignal: 'SIGINT',
        stopTimeoutSeconds: 10,
        healthcheck: {
          test: ['CMD-SHELL', 'test -f /var/lib/app/ready'],
          argv: ['/bin/sh', '-c', 'test -f /var/lib/app/ready'],
          intervalSeconds: 2,
          timeoutSeconds: 3,
          startPeriodSeconds: 0,
          retries: 3,
        },
        exposedPorts: ['8080/tcp'],
        volumes: [{ path: '/var/lib/app', state: 'in the image' }],
      });
      const unit = (await catFromImage(path.join(b.out, 'image.raw'), '/etc/systemd/system/kiln-app.service')).text;
      expect(unit).toContain('\nKillSignal=SIGINT\n');
      const prov = JSON.parse(await fsp.readFile(path.join(b.out, 'provenance.json'), 'utf8')) as {
        subject: { name: string; annotations?: Record<string, string> }[];
      };
      expect(prov.subject.find((s) => s.name === 'image.raw')?.annotations).toEqual({
        'org.opencontainers.image.title': 'kiln user-workdir-env',
      });
    },
    LONG,
  );

  it(
    'no-kernel: the SDK adds a kernel and an init in an extra layer and says so',
    async () => {
      const b = await build('no-kernel');
      expectBooted(b);
      expect(b.log).toContain('Kiln added linux-image-amd64, systemd-sysv in an extra layer');
      expect(b.manifest.notes.join('\n')).toContain('linux-image-amd64');
      expect((await catFromImage(path.join(b.out, 'image.raw'), '/etc/motd')).text).toContain(
        'built by kiln from an image without a kernel',
      );
    },
    LONG,
  );

  it(
    'copy-context: COPY/ADD from a context directory, .dockerignore applied',
    async () => {
      const b = await build('copy-context', ['--context', path.join(repo, 'dockerfiles/copy-context')]);
      expectBooted(b);
      const raw = path.join(b.out, 'image.raw');
      expect((await catFromImage(raw, '/etc/kiln-demo.conf')).text).toBe(
        'greeting = "copied from the build context"\n',
      );
      expect((await catFromImage(raw, '/opt/demo/etc/kiln-demo.conf')).text).toContain('copied from the build context');
      expect((await catFromImage(raw, '/opt/demo/ignored.secret')).text).toBe('');
      expect(b.log).toMatch(/left out by \.dockerignore/);
    },
    LONG,
  );

  it(
    'sysvinit-app: without systemd, CMD runs from /etc/inittab as USER in WORKDIR with ENV, words verbatim; getty on ttyS0; SSH keys made at boot',
    async () => {
      const b = await build('sysvinit-app');
      expectBooted(b);
      const names = new Set((b.manifest.packages ?? []).map((p) => p.name));
      expect(names.has('sysvinit-core')).toBe(true);
      expect(names.has('systemd')).toBe(false);
      expect(names.has('systemd-sysv')).toBe(false);
      const notes = b.manifest.notes.join('\n');
      expect(notes).toContain('/etc/kiln/app.sh');
      expect(notes).toContain('/etc/inittab entry kapp');
      expect(notes).toContain('ssh-keygen -A');
      // The app prints its identity, directory, environment and argv; the hostile words must arrive unexpanded.
      expect(b.serial).toContain('kiln-app: started as appuser (uid 1000 gid 1000) in /srv/app dir');
      expect(b.serial).toContain(
        'kiln-sysv-app: user=appuser groups=appuser pwd=/srv/app dir home=/home/appuser greeting=hello from ENV ' +
          'quote=it\'s $HOME `id` "q" args=2:[two words; $(id)]:[it\'s `id` "x"]',
      );
      expect(b.serial).not.toContain('kiln-app: cannot start');
      expect(b.serial).toMatch(/ssh-keygen: generating new host keys/);
      expect(b.serial).toMatch(/Starting OpenBSD Secure Shell server: sshd/);
      expect(b.serial).toMatch(/kiln login:/);
      const raw = path.join(b.out, 'image.raw');
      const inittab = (await catFromImage(raw, '/etc/inittab')).text;
      expect(inittab.split('\n').filter((l) => l.startsWith('kS0:'))).toEqual([
        'kS0:2345:respawn:/sbin/getty -L ttyS0 115200 vt102',
      ]);
      expect(inittab.split('\n').filter((l) => l.startsWith('kapp:'))).toEqual(['kapp:2345:once:/etc/kiln/app.sh']);
      expect((await catFromImage(raw, '/etc/ssh/ssh_host_ed25519_key')).text).toBe('');
    },
    LONG,
  );

  it(
    'sysvinit-app without a kernel: Kiln adds linux-image-amd64 only, the image keeps sysvinit and its app',
    async () => {
      const b = await build('sysvinit-app', ['--build-arg', 'KERNEL=']);
      expectBooted(b);
      expect(b.log).toContain('Kiln added linux-image-amd64 in an extra layer');
      const names = new Set((b.manifest.packages ?? []).map((p) => p.name));
      expect(names.has('sysvinit-core')).toBe(true);
      expect(names.has('systemd-sysv')).toBe(false);
      expect(b.serial).toContain('INIT: version');
      expect(b.serial).toContain('kiln-sysv-app: user=appuser groups=appuser pwd=/srv/app dir');
    },
    LONG,
  );

  it(
    'debian-trixie: a second allowed base (made with mmdebstrap when missing) boots',
    async () => {
      const b = await build('debian-trixie');
      expectBooted(b);
      expect(b.manifest.os.versionCodename).toBe('trixie');
    },
    LONG,
  );
});
