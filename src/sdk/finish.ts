import { ensureSerialGetty } from './app.js';
import { lstatIn, readdirIn, removeIn, writeFileIn } from './fsroot.js';
import type { Reporter } from './reporter.js';

export const HOSTNAME = 'kiln';
export const FSTAB = 'LABEL=root / ext4 defaults 0 1\n';

/**
 * Turns an exported container filesystem into a machine's root filesystem: Docker leaves hostname, hosts and
 * resolv.conf empty and a /.dockerenv behind; a machine needs an fstab for the disk Kiln makes, and an empty
 * machine-id so each booted copy gets its own. All writes go through fsroot (no symlink is followed).
 */
export async function finishRootfs(root: string, rep: Reporter): Promise<void> {
  await writeFileIn(root, '/etc/hostname', `${HOSTNAME}\n`);
  await writeFileIn(
    root,
    '/etc/hosts',
    `127.0.0.1\tlocalhost\n127.0.1.1\t${HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n`,
  );
  const resolv = await lstatIn(root, '/etc/resolv.conf');
  if (resolv?.isSymbolicLink())
    rep.log('[kiln] finish: /etc/resolv.conf is a symlink (a resolver manages it); left as is');
  else
    await writeFileIn(
      root,
      '/etc/resolv.conf',
      '# The network configuration of the machine (DHCP, systemd-networkd, ...) fills this in.\n',
    );
  await writeFileIn(root, '/etc/fstab', `# Written by Kiln: the root filesystem of the disk image.\n${FSTAB}`);
  // Empty (not missing): systemd then generates a fresh id at first boot and treats it as first boot.
  await writeFileIn(root, '/etc/machine-id', '', 0o444);
  const dbusId = await lstatIn(root, '/var/lib/dbus/machine-id');
  if (dbusId?.isFile()) await removeIn(root, '/var/lib/dbus/machine-id');
  // sysvinit starts no getty on the serial console by itself (systemd does).
  await ensureSerialGetty(root, rep);
  await removeIn(root, '/.dockerenv');
  await removeIn(root, '/.dockerinit');
  // Build-time apt proxy settings belong to the build host, not the image.
  for (const n of await readdirIn(root, '/etc/apt/apt.conf.d')) {
    if (/proxy/i.test(n) && (await removeIn(root, `/etc/apt/apt.conf.d/${n}`)))
      rep.log(`[kiln] finish: removed build-time apt setting ${n}`);
  }
}
