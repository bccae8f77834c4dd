import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { ensureBase } from '../../src/sdk/base.js';
import { dockerBuild, type BuildSettings } from '../../src/sdk/docker-build.js';
import { BUILD_NETWORK, egressRules, ensureBuildNetwork, nameservers, parseAllow } from '../../src/sdk/egress.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { isKilnError } from '../../src/shared/errors.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * The sandbox a Dockerfile's RUN steps get, tried for real (engine, iptables, connections), past the policy check:
 * - checklist 39: no reaching this host, its LAN, private or link-local addresses, while the mirror (and the
 *   internet) stay reachable;
 * - checklist 43: a working directory in /proc/self/fd/N (runc's leaked descriptors, CVE-2024-21626) gives no host
 *   file access.
 */

const MIRROR = 'http://deb.debian.org/debian';
const egress = { subnet: '10.213.0.0/24', mirrors: [MIRROR], allow: [] as string[], rules: 'apply' as const };
const t = tempDir('kiln-sdk-egress-');
afterAll(() => t.cleanup());

describe('egress rules (pure)', () => {
  it('parses allowances and refuses anything else, naming the entry', () => {
    expect(parseAllow(['10.1.2.3', '10.1.0.0/16:3142'])).toEqual([
      { cidr: '10.1.2.3/32', port: undefined },
      { cidr: '10.1.0.0/16', port: 3142 },
    ]);
    for (const bad of [
      '10.1.2',
      '10.1.2.3/33',
      '10.1.2.3:0',
      '10.1.2.3:70000',
      'host:80',
      '10.1.2.3; -j ACCEPT',
      '::1',
      '999.1.1.1',
    ]) {
      const err = (() => {
        try {
          parseAllow([bad]);
        } catch (e) {
          return e;
        }
      })();
      expect(isKilnError(err, 'invalid_input'), bad).toBe(true);
      expect((err as Error).message).toContain(bad);
    }
  });

  it('config refuses a bad KILN_SDK_EGRESS_ALLOW at start, naming the variable', () => {
    expect(loadConfig({ KILN_SDK_EGRESS_ALLOW: '10.1.2.3:3142, 10.9.0.0/16' }).sdk.egressAllow).toEqual([
      '10.1.2.3:3142',
      '10.9.0.0/16',
    ]);
    const err = (() => {
      try {
        loadConfig({ KILN_SDK_EGRESS_ALLOW: '10.1.2.3,apt-cache:3142' });
      } catch (e) {
        return e;
      }
    })();
    expect(isKilnError(err, 'invalid_input')).toBe(true);
    expect((err as Error).message).toContain('KILN_SDK_EGRESS_ALLOW');
  });

  it('reads IPv4 nameservers from resolv.conf', () => {
    expect(
      nameservers('# x\nnameserver 10.0.0.53\nnameserver ::1\nsearch a\nnameserver 10.0.0.53\n  nameserver 1.1.1.1 \n'),
    ).toEqual(['10.0.0.53', '1.1.1.1']);
  });

  it('allows DNS, mirrors and allowances before it refuses the private ranges and the LAN, then allows the rest', () => {
    const { v4, v6 } = egressRules({
      subnet: '10.213.0.0/24',
      resolvers: ['10.0.0.53'],
      allowed: [{ cidr: '10.9.9.9/32', port: 80 }],
      lan: ['192.0.2.0/24'],
    });
    const out = v4.split('\n').filter((l) => l.startsWith('-A KILN-BUILD-OUT'));
    const idx = (re: RegExp) => out.findIndex((l) => re.test(l));
    expect(idx(/-d 10\.0\.0\.53\/32 -p udp .*--dport 53 -j ACCEPT/)).toBeGreaterThanOrEqual(0);
    expect(idx(/-d 10\.9\.9\.9\/32 -p tcp .*--dport 80 -j ACCEPT/)).toBeGreaterThanOrEqual(0);
    for (const denied of [
      '10.0.0.0/8',
      '127.0.0.0/8',
      '169.254.0.0/16',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '192.0.2.0/24',
    ]) {
      const at = idx(new RegExp(`-d ${denied.replace(/[./]/g, '\\$&')} -j REJECT`));
      expect(at, denied).toBeGreaterThan(idx(/--dport 53/));
      expect(at, denied).toBeGreaterThan(idx(/10\.9\.9\.9/));
    }
    expect(out.at(-1)).toBe('-A KILN-BUILD-OUT -j ACCEPT');
    expect(v4).toContain('-A KILN-BUILD-HOST -j REJECT');
    expect(v4).toContain(
      '-A KILN-BUILD-BACK -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A KILN-BUILD-BACK -j REJECT',
    );
    expect(v4).toContain('-A KILN-BUILD-NAT -s 10.213.0.0/24 ! -o kiln-build0 -j MASQUERADE');
    expect(v6).toContain('-A KILN-BUILD-HOST -j REJECT');
  });
});

describe('kiln sdk egress-rules (for an engine on another host)', () => {
  const kiln = path.resolve(import.meta.dirname, '../../bin/kiln');
  const cli = (...args: string[]) =>
    spawnSync(kiln, ['sdk', 'egress-rules', ...args], { encoding: 'utf8', timeout: 60_000 });

  it('for an engine that manages iptables: jumps from DOCKER-USER, no NAT; the kernel takes it (in a network namespace)', () => {
    const r = cli('--engine-iptables', '--resolver', '10.0.0.53', '--lan', '172.18.0.0/16');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('-A KILN-BUILD-OUT -d 10.0.0.53/32 -p udp -m udp --dport 53 -j ACCEPT');
    expect(r.stdout).toContain('-A KILN-BUILD-OUT -d 172.18.0.0/16 -j REJECT');
    expect(r.stdout).toContain('-I DOCKER-USER -i kiln-build0 -j KILN-BUILD-OUT');
    expect(r.stdout).toContain('-I DOCKER-USER -o kiln-build0 -j KILN-BUILD-BACK');
    expect(r.stdout).not.toContain('*nat');
    // A namespace of its own stands in for the engine's host: DOCKER-USER exists there as the engine would make it.
    const ns = `kiln-test-${randomBytes(4).toString('hex')}`;
    const sh = (...a: string[]) =>
      spawnSync('ip', ['netns', 'exec', ns, ...a], {
        encoding: 'utf8',
        input: a[0] === 'iptables-restore' ? r.stdout : undefined,
      });
    expect(spawnSync('ip', ['netns', 'add', ns]).status).toBe(0);
    try {
      expect(sh('iptables', '-N', 'DOCKER-USER').status).toBe(0);
      const applied = sh('iptables-restore', '--noflush');
      expect(applied.stderr).toBe('');
      expect(applied.status).toBe(0);
      expect(sh('iptables', '-S', 'DOCKER-USER').stdout).toContain('-A DOCKER-USER -i kiln-build0 -j KILN-BUILD-OUT');
      expect(sh('iptables', '-S', 'KILN-BUILD-OUT').stdout).toContain('-A KILN-BUILD-OUT -d 169.254.0.0/16 -j REJECT');
    } finally {
      spawnSync('ip', ['netns', 'delete', ns]);
    }
    const v6 = cli('--engine-iptables', '--ipv6', '--resolver', '10.0.0.53');
    expect(v6.stdout).toContain('-I FORWARD -o kiln-build0 -j KILN-BUILD-OUT');
    expect(v6.stdout).toContain('-I INPUT -i kiln-build0 -j KILN-BUILD-HOST');
  });

  it('refuses a malformed address with exit 2 and says which', () => {
    const r = cli('--lan', '10.0.0.0/8; -j ACCEPT');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('10.0.0.0/8; -j ACCEPT');
    expect(r.stdout).toBe('');
    expect(cli('--resolver', '10.0.0.53:53').status).toBe(2);
    expect(cli('--resolver', '10.0.0.0/24').stderr).toContain('--resolver takes one IPv4 address');
  });
});

describe('the filtered build network (real engine and iptables)', () => {
  const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });
  let server: net.Server;
  let port = 0;
  const seen: string[] = [];
  // This host's own LAN address: what a build would use to reach the web, PostgreSQL or Jenkins next to it.
  const hostIp = Object.values(os.networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.213.'))!.address;

  beforeAll(async () => {
    server = net.createServer((s) => {
      seen.push(String(s.remoteAddress));
      s.end('kiln-secret\n');
    });
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    port = (server.address() as net.AddressInfo).port;
    await ensureBase(
      docker,
      'debian:bookworm',
      { mirror: MIRROR, devuanKeyring: '/nonexistent' },
      t.dir,
      new Reporter(undefined, 1 << 20, () => undefined),
    );
  }, 600_000);
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
  });

  const iptablesS = (...args: string[]) => spawnSync('iptables', ['-w', '10', ...args], { encoding: 'utf8' }).stdout;

  it("with sdk.egressRules=external it makes the network but leaves the filter to the engine's host", async () => {
    const before = iptablesS('-S', 'KILN-BUILD-OUT');
    const r = await ensureBuildNetwork(docker, { ...egress, rules: 'external', allow: ['10.99.0.0/16'] });
    expect(r).toEqual({
      network: BUILD_NETWORK,
      summary: expect.stringContaining("filtered by the engine's host (sdk.egressRules=external)") as string,
    });
    expect(iptablesS('-S', 'KILN-BUILD-OUT')).toBe(before);
  });

  it('is idempotent: a second call leaves the same rules and one jump of each kind', async () => {
    const a = await ensureBuildNetwork(docker, egress);
    const rules = iptablesS('-S', 'KILN-BUILD-OUT');
    const b = await ensureBuildNetwork(docker, egress);
    expect(b.network).toBe(BUILD_NETWORK);
    expect(a.summary).toContain('10.213.0.0/24');
    expect(iptablesS('-S', 'KILN-BUILD-OUT')).toBe(rules);
    expect(rules).toMatch(/-A KILN-BUILD-OUT -d 169\.254\.0\.0\/16 -j REJECT/);
    const count = (text: string, re: RegExp) => text.split('\n').filter((l) => re.test(l)).length;
    expect(count(iptablesS('-S', 'FORWARD'), /-i kiln-build0 -j KILN-BUILD-OUT/)).toBe(1);
    expect(count(iptablesS('-S', 'FORWARD'), /-o kiln-build0 -j KILN-BUILD-BACK/)).toBe(1);
    expect(count(iptablesS('-S', 'INPUT'), /-i kiln-build0 -j KILN-BUILD-HOST/)).toBe(1);
    expect(count(iptablesS('-t', 'nat', '-S', 'POSTROUTING'), /-j KILN-BUILD-NAT/)).toBe(1);
    expect(
      count(
        spawnSync('ip6tables', ['-w', '10', '-S', 'INPUT'], { encoding: 'utf8' }).stdout,
        /-i kiln-build0 -j KILN-BUILD-HOST/,
      ),
    ).toBe(1);
  }, 60_000);

  async function build(dockerfileText: string): Promise<{ ok: boolean; error?: string; log: string }> {
    const log: string[] = [];
    const rep = new Reporter(undefined, 1 << 22, (s) => {
      log.push(s);
    });
    const s: BuildSettings = { network: 'filtered', egress, memoryMb: 1024, cpus: 2, timeoutSeconds: 600 };
    const tag = `kiln-egress-test:${randomBytes(6).toString('hex')}`;
    try {
      await dockerBuild(docker, { dockerfileText, buildArgs: {} }, tag, s, rep);
      await docker
        .getImage(tag)
        .remove()
        .catch(() => undefined);
      return { ok: true, log: log.join('') };
    } catch (e) {
      return { ok: false, error: (e as Error).message, log: log.join('') };
    }
  }

  const tryTcp = (target: string) =>
    `if timeout 5 bash -c 'exec 3<>/dev/tcp/${target.replace(':', '/')}' 2>/dev/null; then echo "REACHED ${target}"; else echo "refused ${target}"; fi`;

  it('reaches the mirror (DNS + HTTP) but not this host, its LAN address, the gateway, link-local or private addresses', async () => {
    const nonce = randomBytes(6).toString('hex');
    const targets = [
      `${hostIp}:${port}`,
      `10.213.0.1:${port}`,
      '169.254.169.254:80',
      '10.255.255.1:80',
      '192.168.1.1:80',
      '172.17.0.1:80',
    ];
    const r = await build(
      `FROM debian:bookworm\nRUN echo probe-${nonce} && ${targets.map(tryTcp).join(' && ')} && apt-get update -q && echo MIRROR-OK-${nonce}\n`,
    );
    expect(r.error).toBeUndefined();
    expect(r.ok).toBe(true);
    expect(r.log).toContain('[kiln] build network kiln-build (10.213.0.0/24)');
    for (const target of targets) expect(r.log, target).toContain(`refused ${target}`);
    expect(r.log).not.toMatch(/^REACHED/m); // the RUN line itself, echoed by the engine, holds the word
    expect(r.log).toContain(`MIRROR-OK-${nonce}`);
    expect(seen).toEqual([]);
  }, 600_000);

  it('one build cannot reach another build on the same bridge', async () => {
    // A container on the build network stands in for a build running at the same time. Nothing listens in it, so
    // without the rule a connection would be refused by its kernel ("Connection refused"); the filter answers first.
    const other = await docker.createContainer({
      Image: 'debian:bookworm',
      Cmd: ['sleep', '120'],
      HostConfig: { NetworkMode: BUILD_NETWORK, AutoRemove: true },
    });
    try {
      await other.start();
      const ip = ((await other.inspect()).NetworkSettings.Networks as Record<string, { IPAddress: string }>)[
        BUILD_NETWORK
      ]!.IPAddress;
      expect(ip).toMatch(/^10\.213\.0\./);
      const nonce = randomBytes(6).toString('hex');
      const r = await build(
        `FROM debian:bookworm\nRUN echo peer-${nonce}; timeout 5 bash -c 'exec 3<>/dev/tcp/${ip}/80' 2>&1 | sed 's/^/PEER: /'; true\n`,
      );
      expect(r.ok).toBe(true);
      expect(r.log).toMatch(/^PEER: .*No route to host/m);
      expect(r.log).not.toMatch(/^PEER: .*Connection refused/m);
    } finally {
      await other.kill().catch(() => undefined);
    }
  }, 600_000);

  it('case 43: WORKDIR /proc/self/fd/N reads no host file (the runtime is patched; the policy refuses it too)', async () => {
    // The secret sits in a host directory no container has mounted; through a leaked host descriptor (the cgroup
    // directory of runc's parent) ../../../.. would reach the host's / and the file.
    const secret = `kiln-host-secret-${randomBytes(8).toString('hex')}`;
    writeFileSync(path.join(t.dir, 'secret'), secret);
    const rel = path.relative('/', path.join(t.dir, 'secret'));
    const results: string[] = [];
    for (let fd = 3; fd <= 10; fd++) {
      const r = await build(
        `FROM debian:bookworm\nWORKDIR /proc/self/fd/${fd}\nRUN echo fd-${fd}-${randomBytes(4).toString('hex')}; for up in ../../.. ../../../.. ../../../../.. ../../../../../..; do cat "$up/${rel}" 2>/dev/null; done; true\n`,
      );
      expect(r.log, `fd ${fd}`).not.toContain(secret);
      results.push(r.ok ? 'ran' : `refused: ${r.error}`);
    }
    // A patched runc closes its descriptors before the chdir, so here each step fails to start ("mkdir
    // /proc/self/fd/7: not a directory"); a vulnerable one would chdir into the host's cgroup directory and the
    // cat would print the secret. Either way the secret must not show.
    expect(results).toHaveLength(8);
  }, 600_000);

  it('case 39: a RUN that calls an internal service (like `curl http://jenkins:8080`) fails the build, nothing reaches it', async () => {
    const nonce = randomBytes(6).toString('hex');
    const r = await build(
      `FROM debian:bookworm\nRUN echo steal-${nonce} && exec 3<>/dev/tcp/${hostIp}/${port} && cat <&3\n`,
    );
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/returned a non-zero code/);
    expect(r.log).toContain(`steal-${nonce}`);
    expect(r.log).not.toContain('kiln-secret');
    expect(seen).toEqual([]);
  }, 600_000);
});
