import net from 'node:net';
import { networkInterfaces } from 'node:os';

/**
 * Addresses Kiln never connects to on a user's behalf unless an admin allows them by name: this host, private,
 * shared, link-local (cloud metadata at 169.254.169.254), multicast and the special ranges. One list for the build
 * network's filter (src/sdk/egress.ts, IPv4 only: builds get no IPv6 at all) and for what the web fetches itself
 * (git sources, src/core/git).
 */
export const DENIED_V4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/4',
  '240.0.0.0/4',
];

/**
 * The IPv6 ranges of the same kinds: unspecified and loopback, unique-local, link-local, site-local, multicast,
 * documentation, discard, and the prefixes that embed an IPv4 address (NAT64, 6to4, Teredo), which could carry a
 * denied one. IPv4-mapped addresses (::ffff:a.b.c.d) are checked as the IPv4 address they are.
 */
export const DENIED_V6 = [
  '::/128',
  '::1/128',
  'fc00::/7',
  'fe80::/10',
  'fec0::/10',
  'ff00::/8',
  '2001:db8::/32',
  '100::/64',
  '64:ff9b::/96',
  '64:ff9b:1::/48',
  '2002::/16',
  '2001::/32',
];

function blockList(): net.BlockList {
  const b = new net.BlockList();
  for (const c of DENIED_V4) {
    const [a, bits] = c.split('/');
    b.addSubnet(a!, Number(bits), 'ipv4');
  }
  for (const c of DENIED_V6) {
    const [a, bits] = c.split('/');
    b.addSubnet(a!, Number(bits), 'ipv6');
  }
  return b;
}
const DENIED = blockList();

/** `::ffff:10.0.0.1` -> `10.0.0.1`; anything else unchanged. */
export function unmapV4(ip: string): string {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  return m ? m[1]! : ip;
}

/** The addresses of this host's own interfaces (a public one included: its services listen there too). */
export function ownAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(unmapV4(a.address));
  return out;
}

/**
 * Whether `ip` is an address Kiln refuses to reach by default: one of the denied ranges, or this host itself. Not an
 * IP address at all counts as refused.
 */
export function isRefusedAddress(ip: string, own: ReadonlySet<string> = ownAddresses()): boolean {
  const a = unmapV4(ip.replace(/^\[|\]$/g, '').replace(/%.*$/, ''));
  const family = net.isIP(a);
  if (family === 0) return true;
  if (own.has(a)) return true;
  return DENIED.check(a, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * An admin's allow list (`git.allowHosts`, `webhooks.allowHosts`): whether it lets `host` (by its name) or an address
 * it resolved to (by address or prefix) through.
 */
export function allowedHost(entries: readonly string[], host: string): (address: string) => boolean {
  const names = new Set(entries.filter((e) => net.isIP(e.split('/')[0]!) === 0).map((e) => e.toLowerCase()));
  if (names.has(host.toLowerCase())) return () => true;
  const list = new net.BlockList();
  for (const e of entries) {
    const [a, bits] = e.split('/');
    const fam = net.isIP(a!);
    if (fam === 0) continue;
    const type = fam === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(a!, type);
    else list.addSubnet(a!, Number(bits), type);
  }
  return (address) => {
    const a = unmapV4(address);
    const fam = net.isIP(a);
    return fam !== 0 && list.check(a, fam === 4 ? 'ipv4' : 'ipv6');
  };
}
