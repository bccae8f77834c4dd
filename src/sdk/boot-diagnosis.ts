/**
 * Why an image did not boot, read off its serial console: the difference between "no login prompt within 300 s"
 * and an answer a tester can act on. Each rule matches what the kernel, Debian's initramfs or systemd print when
 * that failure happens, and says what to change in the Dockerfile.
 */

export interface BootFinding {
  /** What the console shows, in plain words. */
  what: string;
  /** What to change. */
  fix: string;
  /** The console line that gave it away. */
  evidence: string;
}

interface Rule {
  re: RegExp;
  what: string;
  fix: string;
  /** A dead end: the machine will not get further, so the boot test may stop at once. */
  terminal: boolean;
}

const RULES: Rule[] = [
  {
    re: /Kernel panic - not syncing: VFS: Unable to mount root fs[^\n]*/,
    what: 'the kernel could not mount the root filesystem (no initrd, or one without the disk and ext4 drivers)',
    fix: 'install the kernel with its initramfs (initramfs-tools) and keep MODULES=most in /etc/initramfs-tools/initramfs.conf',
    terminal: true,
  },
  {
    re: /Kernel panic - not syncing: (?:No working init found|Requested init \S+ failed)[^\n]*/,
    what: 'no init program could be started',
    fix: 'install an init (Debian: systemd-sysv, or sysvinit-core) and do not remove or replace /sbin/init',
    terminal: true,
  },
  {
    re: /Kernel panic - not syncing: Attempted to kill init![^\n]*/,
    what: 'the init program (/sbin/init) exited or crashed, so the kernel stopped',
    fix: '/sbin/init must be a real init (systemd or sysvinit), not a script or program that returns; run applications with CMD/ENTRYPOINT instead',
    terminal: true,
  },
  {
    re: /Kernel panic - not syncing[^\n]*/,
    what: 'the kernel panicked',
    fix: 'read the lines before the panic in the serial log; a kernel from the distribution (linux-image-amd64) is the safe choice',
    terminal: true,
  },
  {
    re: /(?:Gave up waiting for root file system device|ALERT! [^\n]* does not exist)[^\n]*/,
    what: 'the initramfs could not find the root partition (LABEL=root), so it dropped to its shell',
    fix: 'regenerate the initramfs with the virtio and ext4 drivers: keep MODULES=most (not dep) in /etc/initramfs-tools/initramfs.conf',
    terminal: true,
  },
  {
    re: /(?:You are in emergency mode|Give root password for maintenance|Press Enter for maintenance)[^\n]*/,
    what: 'systemd fell back to emergency mode (usually a mount in /etc/fstab or a required unit failed)',
    fix: 'do not add entries to /etc/fstab for disks the machine will not have (Kiln writes the root entry); see the FAILED units above',
    terminal: true,
  },
  {
    re: /Reached target[^\n]*(?:Multi-User System|multi-user\.target)[^\n]*/,
    what: 'the system booted, but nothing offered a login on the serial console ttyS0',
    fix: 'do not mask or remove serial-getty@ttyS0.service (or, without systemd, the ttyS0 getty line in /etc/inittab)',
    terminal: false,
  },
];

/** The console without colour and cursor sequences (systemd's `[  OK  ]` is coloured). */
// eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
export const stripAnsi = (s: string): string => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');

/** The first rule that matches, most specific first. */
export function diagnoseBoot(serial: string): (BootFinding & { terminal: boolean }) | undefined {
  const text = stripAnsi(serial);
  for (const r of RULES) {
    const m = r.re.exec(text);
    if (m) return { what: r.what, fix: r.fix, evidence: m[0].trim().slice(0, 300), terminal: r.terminal };
  }
  if (!/Linux version \d/.test(text)) {
    return {
      what: 'the kernel never wrote to the serial console: the firmware or boot loader did not start it',
      fix: 'keep the kernel at /boot/vmlinuz-* with its initrd (Kiln installs the boot loader); the serial log shows how far the firmware got',
      evidence: text.trim().split('\n').at(-1)?.slice(0, 300) ?? '',
      terminal: false,
    };
  }
  return undefined;
}

/** Units systemd reported as failed, for the reason text (at most five). */
export function failedUnits(serial: string): string[] {
  const out = new Set<string>();
  for (const m of stripAnsi(serial).matchAll(/Failed to start ([^\s]+?)(?: - [^\n]*)?\.?\r?$/gm)) {
    out.add(m[1]!);
    if (out.size >= 5) break;
  }
  return [...out];
}

/** The dead-end patterns, for the boot test to stop at once instead of waiting for its timeout. */
export const TERMINAL_PATTERNS: RegExp[] = RULES.filter((r) => r.terminal).map((r) => r.re);

export function explain(serial: string): string | undefined {
  const f = diagnoseBoot(serial);
  const units = failedUnits(serial);
  const parts: string[] = [];
  if (f) parts.push(`${f.what} (console: "${f.evidence}"). Fix: ${f.fix}`);
  if (units.length) parts.push(`failed units: ${units.join(', ')}`);
  return parts.length ? parts.join('; ') : undefined;
}
