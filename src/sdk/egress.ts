import { promises as dns } from 'node:dns';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import type Dockerode from 'dockerode';
import { IPV4_CIDR_PORT_RE } from '../config/index.js';
import { KilnError } from '../shared/errors.js';
import { run } from '../shared/subprocess.js';
import { DENIED_V4 } from '../shared/addresses.js';

/**
 * The `filtered` build network: a Docker bridge network of Kiln's own whose traffic the host filters, so a
 * Dockerfile's RUN can fetch from the internet (apt, pip, git) but reach nothing inside: not this host (web,
 * PostgreSQL, glue SSH, Docker), not its LAN (Jenkins), not link-local (cloud metadata at 169.254.169.254), not the
 * private ranges. The `host` network mode reaches all of those.
 *
 * dockerd runs with `--iptables=false` here, so the engine makes the bridge and the container ends of it and Kiln
 * writes every rule itself (NAT included), in chains of its own:
 *
 *   filter FORWARD -i BR  -> KILN-BUILD-OUT   DNS to the host's resolvers, the configured mirrors and
 *                                             `sdk.egressAllow`; REJECT the denied ranges; ACCEPT the rest
 *   filter FORWARD -o BR  -> KILN-BUILD-BACK  replies only: nothing outside, and no other build, connects in
 *   filter INPUT   -i BR  -> KILN-BUILD-HOST  REJECT (no service of this host; v4 and v6)
 *   nat POSTROUTING -s NET ! -o BR -> MASQUERADE
 *
 * Each chain is rewritten whole by one `iptables-restore --noflush` (atomic), and the jumps are added only when
 * missing, so calling this for every build is idempotent and cheap.
 */

export const BUILD_NETWORK = 'kiln-build';
const BRIDGE = 'kiln-build0';
const CHAIN_OUT = 'KILN-BUILD-OUT';
const CHAIN_BACK = 'KILN-BUILD-BACK';
const CHAIN_HOST = 'KILN-BUILD-HOST';
const CHAIN_NAT = 'KILN-BUILD-NAT';

export interface EgressOptions {
  /** The subnet of the build network when Kiln creates it. */
  subnet: string;
  /** URLs the builds must reach even inside a denied range (the apt mirror, snapshot, Devuan mirror). */
  mirrors: readonly string[];
  /** `CIDR` or `CIDR:port` (TCP) the admin allows besides: an internal mirror, an apt cache. */
  allow: readonly string[];
  /**
   * `apply`: Kiln writes the rules here (the engine is local and Kiln runs as root). `external`: the engine runs
   * elsewhere (a Jenkins agent's dind) and its host applies `kiln sdk egress-rules --engine-iptables` itself.
   */
  rules: 'apply' | 'external';
}

/** One allowed destination: an IPv4 network, and a TCP port or any port/protocol. */
export interface Allowed {
  cidr: string;
  port?: number;
}

/** Parses `sdk.egressAllow` entries; a malformed one is a config error naming it. */
export function parseAllow(entries: readonly string[]): Allowed[] {
  return entries.map((e) => {
    const m = IPV4_CIDR_PORT_RE.exec(e.trim());
    const bits = m?.[2] === undefined ? 32 : Number(m[2]);
    const port = m?.[3] === undefined ? undefined : Number(m[3]);
    if (!m || net.isIPv4(m[1]!) === false || bits > 32 || (port !== undefined && (port < 1 || port > 65535))) {
      throw new KilnError(
        'invalid_input',
        `sdk.egressAllow: "${e}" is not an IPv4 address or CIDR with an optional :port`,
      );
    }
    return { cidr: `${m[1]}/${bits}`, port };
  });
}

/** IPv4 nameservers in a resolv.conf text (what the engine's embedded DNS forwards to). */
export function nameservers(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && net.isIPv4(m[1]!) && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

export interface RuleInputs {
  subnet: string;
  resolvers: readonly string[];
  allowed: readonly Allowed[];
  lan: readonly string[];
}

/**
 * The rules of Kiln's chains, as iptables-restore input (`--noflush`). Pure, so the policy is testable without a
 * kernel. `engineIptables`: for an engine that manages iptables itself (a dind agent): no NAT (the engine does it),
 * and the jumps come in the text, from DOCKER-USER, which the engine evaluates before its own ACCEPT rules.
 */
export function egressRules(p: RuleInputs, engineIptables = false): { v4: string; v6: string } {
  const out: string[] = ['*filter', `:${CHAIN_OUT} - [0:0]`, `:${CHAIN_BACK} - [0:0]`, `:${CHAIN_HOST} - [0:0]`];
  for (const r of p.resolvers) {
    for (const proto of ['udp', 'tcp'])
      out.push(`-A ${CHAIN_OUT} -d ${r}/32 -p ${proto} -m ${proto} --dport 53 -j ACCEPT`);
  }
  for (const a of p.allowed) {
    out.push(
      a.port === undefined
        ? `-A ${CHAIN_OUT} -d ${a.cidr} -j ACCEPT`
        : `-A ${CHAIN_OUT} -d ${a.cidr} -p tcp -m tcp --dport ${a.port} -j ACCEPT`,
    );
  }
  for (const d of [...DENIED_V4, ...p.lan])
    out.push(`-A ${CHAIN_OUT} -d ${d} -j REJECT --reject-with icmp-admin-prohibited`);
  out.push(`-A ${CHAIN_OUT} -j ACCEPT`);
  // Only replies enter the bridge. This also refuses one build's connection to another running at the same time:
  // bridge-nf-call-iptables puts their bridged frames through FORWARD with the bridge as the output device.
  out.push(
    `-A ${CHAIN_BACK} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-A ${CHAIN_BACK} -j REJECT --reject-with icmp-admin-prohibited`,
  );
  out.push(`-A ${CHAIN_HOST} -j REJECT --reject-with icmp-admin-prohibited`);
  const v6 = [
    '*filter',
    `:${CHAIN_HOST} - [0:0]`,
    `:${CHAIN_OUT} - [0:0]`,
    `-A ${CHAIN_HOST} -j REJECT --reject-with icmp6-adm-prohibited`,
    `-A ${CHAIN_OUT} -j REJECT --reject-with icmp6-adm-prohibited`,
  ];
  if (engineIptables) {
    out.push(
      ...jumps(p.subnet, 'DOCKER-USER')
        .filter((j) => j.cmd === 'iptables')
        .map((j) => `-I ${j.rule.join(' ')}`),
    );
    v6.push(
      ...jumps(p.subnet)
        .filter((j) => j.cmd === 'ip6tables')
        .map((j) => `-I ${j.rule.join(' ')}`),
    );
    out.push('COMMIT', '');
  } else {
    out.push(
      'COMMIT',
      '*nat',
      `:${CHAIN_NAT} - [0:0]`,
      `-A ${CHAIN_NAT} -s ${p.subnet} ! -o ${BRIDGE} -j MASQUERADE`,
      'COMMIT',
      '',
    );
  }
  v6.push('COMMIT', '');
  return { v4: out.join('\n'), v6: v6.join('\n') };
}

/** The jumps from the built-in chains into Kiln's (table, chain, match...); IPv4 forwarding enters at `forward`. */
function jumps(
  subnet: string,
  forward = 'FORWARD',
): { cmd: 'iptables' | 'ip6tables'; table: string; rule: string[] }[] {
  return [
    { cmd: 'iptables', table: 'filter', rule: [forward, '-i', BRIDGE, '-j', CHAIN_OUT] },
    { cmd: 'iptables', table: 'filter', rule: [forward, '-o', BRIDGE, '-j', CHAIN_BACK] },
    { cmd: 'iptables', table: 'filter', rule: ['INPUT', '-i', BRIDGE, '-j', CHAIN_HOST] },
    ...(forward === 'FORWARD'
      ? [
          {
            cmd: 'iptables' as const,
            table: 'nat',
            rule: ['POSTROUTING', '-s', subnet, '!', '-o', BRIDGE, '-j', CHAIN_NAT],
          },
        ]
      : []),
    { cmd: 'ip6tables', table: 'filter', rule: ['INPUT', '-i', BRIDGE, '-j', CHAIN_HOST] },
    { cmd: 'ip6tables', table: 'filter', rule: ['FORWARD', '-i', BRIDGE, '-j', CHAIN_OUT] },
    { cmd: 'ip6tables', table: 'filter', rule: ['FORWARD', '-o', BRIDGE, '-j', CHAIN_OUT] },
  ];
}

const SYSCTLS = [
  { file: '/proc/sys/net/ipv4/ip_forward', what: 'IPv4 forwarding' },
  { file: '/proc/sys/net/bridge/bridge-nf-call-iptables', what: 'bridge netfilter' },
];

const NEEDS = 'The filtered build network (sdk.buildNetwork=filtered) needs root and iptables on the build host';

async function iptables(cmd: string, args: string[], input?: string): Promise<{ code: number | null; stderr: string }> {
  try {
    return await run(cmd, ['-w', '10', ...args], { timeoutMs: 30_000, input });
  } catch (e) {
    throw new KilnError('backend_unavailable', `${NEEDS}: ${cmd} could not be started`, { cause: e });
  }
}

async function restore(cmd: 'iptables-restore' | 'ip6tables-restore', rules: string): Promise<void> {
  const r = await iptables(cmd, ['--noflush'], rules);
  if (r.code !== 0) throw new KilnError('backend_unavailable', `${NEEDS}: ${cmd} failed: ${r.stderr.trim()}`);
}

/** Directly connected IPv4 networks of this host (its LAN), other than the build network itself. */
export async function lanNetworks(subnet: string): Promise<string[]> {
  const r = await run('ip', ['-j', '-4', 'route', 'show', 'table', 'main', 'scope', 'link'], {
    timeoutMs: 10_000,
  }).catch(() => undefined);
  if (!r || r.code !== 0) return [];
  try {
    const routes = JSON.parse(r.stdout) as { dst?: string; dev?: string }[];
    return routes
      .filter((x) => x.dev !== BRIDGE && x.dst && x.dst !== subnet && IPV4_CIDR_PORT_RE.test(x.dst))
      .map((x) => x.dst!);
  } catch {
    return [];
  }
}

/** What the filter lets through before the denied ranges: the mirrors (resolved now) and the admin's entries. */
export async function allowances(mirrors: readonly string[], allow: readonly string[]): Promise<Allowed[]> {
  return [...(await mirrorAllowances(mirrors)), ...parseAllow(allow)];
}

/** The addresses (and TCP port) of each mirror URL. */
async function mirrorAllowances(urls: readonly string[]): Promise<Allowed[]> {
  const out: Allowed[] = [];
  for (const u of urls) {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      continue;
    }
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const addrs = net.isIP(host)
      ? [{ address: host, family: net.isIP(host) }]
      : await dns.lookup(host, { all: true }).catch(() => []);
    for (const a of addrs) if (a.family === 4) out.push({ cidr: `${a.address}/32`, port });
  }
  return out;
}

export async function resolvers(): Promise<string[]> {
  // With systemd-resolved, /etc/resolv.conf names a stub on 127.0.0.53 and the engine forwards to the real servers.
  for (const f of ['/run/systemd/resolve/resolv.conf', '/etc/resolv.conf']) {
    const text = await fsp.readFile(f, 'utf8').catch(() => undefined);
    if (text !== undefined) return nameservers(text);
  }
  return [];
}

/** The build network's subnet: the engine's (it may predate a config change), else creates it with `subnet`. */
async function ensureNetwork(docker: Dockerode, subnet: string): Promise<string> {
  const inspect = async () => {
    try {
      const n = (await docker.getNetwork(BUILD_NETWORK).inspect()) as {
        IPAM?: { Config?: { Subnet?: string }[] };
        Options?: Record<string, string>;
      };
      if (n.Options?.['com.docker.network.bridge.name'] !== BRIDGE) {
        throw new KilnError(
          'backend_unavailable',
          `The engine has a network named ${BUILD_NETWORK} that Kiln did not make (its bridge is not ${BRIDGE}); remove it or rename it`,
        );
      }
      return n.IPAM?.Config?.find((c) => c.Subnet && IPV4_CIDR_PORT_RE.test(c.Subnet))?.Subnet;
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return undefined;
      if (e instanceof KilnError) throw e;
      throw new KilnError('backend_unavailable', 'The Docker engine did not answer', { cause: e });
    }
  };
  const existing = await inspect();
  if (existing) return existing;
  try {
    await docker.createNetwork({
      Name: BUILD_NETWORK,
      Driver: 'bridge',
      CheckDuplicate: true,
      Internal: false,
      IPAM: { Driver: 'default', Config: [{ Subnet: subnet }] },
      Options: { 'com.docker.network.bridge.name': BRIDGE },
      Labels: { 'io.kiln.network': 'build' },
    });
  } catch (e) {
    // Another build created it at the same moment: use that one.
    if ((e as { statusCode?: number }).statusCode !== 409) {
      throw new KilnError(
        'backend_unavailable',
        `Could not create the build network ${BUILD_NETWORK} (${subnet}): ${(e as Error).message}`,
        { cause: e },
      );
    }
  }
  const made = await inspect();
  if (!made) throw new KilnError('backend_unavailable', `The build network ${BUILD_NETWORK} has no IPv4 subnet`);
  return made;
}

/**
 * Makes sure the filtered build network and its rules are in place; returns the network name for the build API's
 * `networkmode` and a line for the build log. Fails closed: without root or iptables the build does not run.
 */
export async function ensureBuildNetwork(
  docker: Dockerode,
  o: EgressOptions,
): Promise<{ network: string; summary: string }> {
  const allowed = await allowances(o.mirrors, o.allow);
  const subnet = await ensureNetwork(docker, o.subnet);
  if (o.rules === 'external') {
    return {
      network: BUILD_NETWORK,
      summary: `build network ${BUILD_NETWORK} (${subnet}): filtered by the engine's host (sdk.egressRules=external)`,
    };
  }
  const [dnsServers, lan] = await Promise.all([resolvers(), lanNetworks(subnet)]);
  const rules = egressRules({ subnet, resolvers: dnsServers, allowed, lan });
  await restore('iptables-restore', rules.v4);
  await restore('ip6tables-restore', rules.v6);
  for (const j of jumps(subnet)) {
    const check = await iptables(j.cmd, ['-t', j.table, '-C', ...j.rule]);
    if (check.code === 0) continue;
    const add = await iptables(j.cmd, ['-t', j.table, '-I', ...j.rule]);
    if (add.code !== 0)
      throw new KilnError('backend_unavailable', `${NEEDS}: ${j.cmd} -I ${j.rule[0]} failed: ${add.stderr.trim()}`);
  }
  // Forwarding lets the bridge reach the internet at all, and bridge-nf-call-iptables puts build-to-build frames
  // through the chains above; dockerd sets both only when it manages iptables itself.
  for (const { file, what } of SYSCTLS) {
    const cur = await fsp.readFile(file, 'utf8').catch(() => '');
    if (cur.trim() === '1') continue;
    await fsp.writeFile(file, '1').catch((e: Error) => {
      throw new KilnError('backend_unavailable', `${NEEDS}: could not turn on ${what} (${file}): ${e.message}`);
    });
  }
  const allowedText = allowed.map((a) => (a.port ? `${a.cidr}:${a.port}` : a.cidr)).join(', ') || 'none';
  return {
    network: BUILD_NETWORK,
    summary: `build network ${BUILD_NETWORK} (${subnet}): internet only; this host, its LAN (${lan.join(', ') || 'none'}), private and link-local ranges refused; DNS via ${dnsServers.join(', ') || 'none'}; allowed: ${allowedText}`,
  };
}
