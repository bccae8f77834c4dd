import { promises as dns } from 'node:dns';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { KilnError, type ErrorCode } from './errors.js';

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
  for (const [list, type] of [
    [DENIED_V4, 'ipv4'],
    [DENIED_V6, 'ipv6'],
  ] as const)
    for (const c of list) {
      const [a, bits] = c.split('/');
      b.addSubnet(a!, Number(bits), type);
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

/** How host names resolve (every address of the name); dns.lookup by default, tests give their own. */
export type Lookup = (host: string) => Promise<string[]>;

const defaultLookup: Lookup = async (host) =>
  (await dns.lookup(host, { all: true, verbatim: true })).map((a) => a.address);

/** Who asks, for the refusals' wording: git sources and webhooks differ only in these. */
export interface AddressCheck {
  /** `git.allowHosts`, `webhooks.allowHosts`. */
  allowHosts: readonly string[];
  lookup?: Lookup;
  /** "The repository's host", "The webhook's host". */
  subject: string;
  /** What Kiln does not do there: "fetch from", "send to". */
  refusedAction: string;
  /** The variable an admin sets to allow it. */
  allowVariable: string;
  /** The code of "does not resolve". */
  unresolvedCode: ErrorCode;
}

/**
 * Every address `host` resolves to must be one Kiln may reach on a user's behalf (or be allowed by the admin's
 * list); returns the first, the one to connect to (pinned by the caller, so DNS cannot move it after this check).
 */
export async function checkedAddress(host: string, o: AddressCheck): Promise<string> {
  let addresses: string[];
  if (net.isIP(host)) addresses = [host];
  else {
    try {
      addresses = await (o.lookup ?? defaultLookup)(host);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA')
        throw new KilnError(o.unresolvedCode, `${o.subject} ${host} does not resolve.`);
      throw new KilnError('backend_unavailable', `${o.subject} ${host} could not be resolved now.`, { cause: e });
    }
  }
  if (addresses.length === 0) throw new KilnError(o.unresolvedCode, `${o.subject} ${host} does not resolve.`);
  const allow = allowedHost(o.allowHosts, host);
  for (const a of addresses)
    if (isRefusedAddress(a) && !allow(a))
      throw new KilnError(
        'forbidden',
        `${o.subject} ${host} is at ${a}, an address Kiln does not ${o.refusedAction} (loopback, private, link-local or this machine's own); an admin can allow it with ${o.allowVariable}.`,
      );
  return addresses[0]!;
}
