import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBase } from '../../src/sdk/base.js';
import { dockerBuild, type BuildSettings } from '../../src/sdk/docker-build.js';
import { verifyEngineGuard } from '../../src/sdk/engine-guard.js';
import { refuseOnBuild } from '../../src/sdk/pipeline.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { isKilnError } from '../../src/shared/errors.js';
import { runSdkBuild, type SdkRun } from '../helpers/sdk.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Checklist case 39 at the engine (finding 1): whatever the policy lets through, nothing a Dockerfile does makes the
 * engine fetch: a remote ADD, a FROM or COPY --from naming a registry, the same from an ONBUILD trigger of a parent
 * stage, or spelled through ARG, ENV, build args, `${X:-..}`, `${X:+..}`, JSON form, lower case, the escape directive.
 * A listener on this machine (loopback, v4 and v6, and the LAN address) stands in for everything the engine could
 * reach; it must see no connection, and every build must fail. The engine is the one scripts/ensure-dockerd.sh set
 * up (DOCKER_SOCKET selects another, as for `kiln sdk build`).
 */
const socketPath = process.env.DOCKER_SOCKET ?? '/var/run/docker.sock';
const docker = new Dockerode({ socketPath });
const t = tempDir('kiln-sdk-guard-');
const quiet = () => new Reporter(undefined, 1 << 22, () => undefined);

const lanIp = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.213.'))!.address;
let server: net.Server;
let port = 0;
const seen: string[] = [];

beforeAll(async () => {
  // Any connection counts; a reply is sent anyway so that a fetch that got through would succeed and show.
  server = net.createServer((s) => {
    seen.push(String(s.remoteAddress));
    s.end('HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nkiln-secret\n');
  });
  await new Promise<void>((r) => server.listen({ port: 0, host: '::' }, r));
  port = (server.address() as net.AddressInfo).port;
  await ensureBase(docker, 'debian:bookworm', { mirror: 'http://deb.debian.org/debian' }, t.dir, quiet());
}, 600_000);
afterAll(async () => {
  await new Promise((r) => server?.close(r));
  t.cleanup();
});

/** Each hostile form, for one host:port (`h`); `args` are build args. */
function hostile(h: string): { name: string; dockerfile: string; args?: Record<string, string> }[] {
  const u = `http://${h}/kiln-secret`;
  return [
    { name: 'ADD <url>', dockerfile: `FROM debian:bookworm\nADD ${u} /x\n` },
    { name: 'ADD <url> in JSON form, lower case', dockerfile: `FROM debian:bookworm\nadd ["${u}", "/x"]\n` },
    { name: 'FROM <registry>/img', dockerfile: `FROM ${h}/kiln/img\nRUN true\n` },
    {
      name: 'COPY --from=<registry>/img',
      dockerfile: `FROM debian:bookworm\nCOPY --from=${h}/kiln/img /etc/passwd /x\n`,
    },
    {
      name: 'ONBUILD ADD from a parent stage',
      dockerfile: `FROM debian:bookworm AS parent\nONBUILD ADD ${u} /x\nFROM parent\nRUN true\n`,
    },
    {
      name: 'ONBUILD COPY --from from a parent stage',
      dockerfile: `FROM debian:bookworm AS parent\nonbuild copy --from=${h}/kiln/img /etc/passwd /x\nFROM parent\nRUN true\n`,
    },
    { name: 'ADD $U (ARG default)', dockerfile: `FROM debian:bookworm\nARG U=${u}\nADD $U /x\n` },
    { name: 'ADD ${U} (ENV)', dockerfile: `FROM debian:bookworm\nENV U=${u}\nADD \${U} /x\n` },
    { name: 'ADD ${X:-url}', dockerfile: `FROM debian:bookworm\nADD \${X:-${u}} /x\n` },
    { name: 'FROM ${X:+registry}', dockerfile: `ARG X=1\nFROM \${X:+${h}/kiln/img}\nRUN true\n` },
    {
      name: 'FROM ${B} with a build arg',
      dockerfile: 'ARG B=debian:bookworm\nFROM ${B}\nRUN true\n',
      args: { B: `${h}/kiln/img` },
    },
    {
      name: 'COPY --from=$I (ARG before FROM)',
      dockerfile: `ARG I=${h}/kiln/img\nFROM debian:bookworm\nARG I\nCOPY --from=\${I} /etc/passwd /x\n`,
    },
    {
      name: 'escape directive and a continuation',
      dockerfile: `# escape=\`\nFROM debian:bookworm\nADD http://${h}/\`\nkiln-secret /x\n`,
    },
    {
      name: 'ENV chain into ONBUILD',
      dockerfile: `FROM debian:bookworm AS parent\nENV A=http://${h} B=/kiln-secret\nONBUILD ADD \${A}\${B} /x\nFROM parent\nRUN true\n`,
    },
  ];
}

describe('case 39: the engine fetches nothing (policy bypassed: dockerBuild directly)', () => {
  const settings: BuildSettings = { network: 'none', memoryMb: 512, cpus: 1, timeoutSeconds: 300 };

  it("case 39: the SDK's check finds the engine guard in place", async () => {
    await expect(verifyEngineGuard(docker)).resolves.toMatch(
      /^engine guard: the engine cannot fetch from this host \(probed 127\.0\.0\.1.*refused, no connection\)$/,
    );
  });

  // The daemon's own fetches do not depend on the RUN steps' network: `none` keeps them apart from the build network.
  for (const where of ['loopback', 'lan', 'loopback6'] as const) {
    it(`case 39: every hostile form fails and the listener on ${where} sees no connection`, async () => {
      const h = where === 'lan' ? `${lanIp}:${port}` : where === 'loopback' ? `127.0.0.1:${port}` : `[::1]:${port}`;
      const forms = hostile(h).filter((f) => where !== 'loopback6' || /ADD/.test(f.name));
      const outcomes: string[] = [];
      for (const f of forms) {
        const tag = `kiln-guard-test:${randomBytes(6).toString('hex')}`;
        const err = await dockerBuild(
          docker,
          { dockerfileText: f.dockerfile, buildArgs: f.args ?? {} },
          tag,
          settings,
          quiet(),
        ).then(
          () => undefined,
          (e: unknown) => e,
        );
        await docker
          .getImage(tag)
          .remove()
          .catch(() => undefined);
        outcomes.push(`${f.name}: ${err ? (err as Error).message : 'BUILT'}`);
        expect(isKilnError(err, 'build_failed'), outcomes.at(-1)).toBe(true);
      }
      expect(seen, outcomes.join('\n')).toEqual([]);
    }, 600_000);
  }
});

describe('case 39: the same through the whole SDK (policy + engine)', () => {
  async function sdk(dockerfile: string, buildArgs: Record<string, string> = {}): Promise<SdkRun> {
    const dir = await fsp.mkdtemp(path.join(t.dir, 'sdk-'));
    await fsp.writeFile(path.join(dir, 'Dockerfile'), dockerfile);
    return runSdkBuild(path.join(dir, 'Dockerfile'), path.join(dir, 'out'), { buildArgs });
  }

  it('case 39: every hostile form fails (refused by the policy or by the engine) and nothing connects', async () => {
    for (const h of [`${lanIp}:${port}`, `127.0.0.1:${port}`]) {
      for (const f of hostile(h)) {
        const r = await sdk(f.dockerfile, f.args);
        expect(r.code, `${f.name}: ${r.log.slice(-2000)}`).toBe(1);
        expect(r.result.ok).toBe(false);
        expect(['policy_violation', 'build_failed'], `${f.name}: ${r.result.error?.message}`).toContain(
          r.result.error?.code,
        );
        expect(seen, f.name).toEqual([]);
      }
    }
  }, 1_800_000);

  it("ONBUILD triggers of the built image never fire in the SDK's own layers (bootable, live ISO): the image is refused", async () => {
    const marker = `kiln-trigger-${randomBytes(4).toString('hex')}`;
    // No kernel: without the refusal the SDK would build its bootable layer FROM this image, and the trigger would run.
    const r = await sdk(`FROM debian:bookworm\nRUN echo ${marker}-built\nONBUILD RUN echo ${marker}-fired\n`);
    expect(r.result.error?.code).toBe('policy_violation');
    expect(r.result.error?.message).toMatch(/ONBUILD/);
    expect(r.log).not.toMatch(new RegExp(`^${marker}-fired$`, 'm'));
    expect(r.log).not.toContain('== bootable');
    // The engine-side check itself, on the image's real config (the policy may refuse such a Dockerfile first).
    const tag = `kiln-guard-test:${randomBytes(6).toString('hex')}`;
    const built = await dockerBuild(
      docker,
      { dockerfileText: `FROM debian:bookworm\nONBUILD RUN echo ${marker}\n`, buildArgs: {} },
      tag,
      { network: 'none', memoryMb: 512, cpus: 1, timeoutSeconds: 300 },
      quiet(),
    );
    try {
      const config = (await docker.getImage(built.id).inspect()).Config;
      expect(config.OnBuild).toEqual([`RUN echo ${marker}`]);
      expect(() => refuseOnBuild(config)).toThrow(/declares ONBUILD triggers/);
      expect(() => refuseOnBuild({ OnBuild: null })).not.toThrow();
    } finally {
      await docker
        .getImage(tag)
        .remove()
        .catch(() => undefined);
    }
  }, 300_000);

  it("case 37: RUN --network=host fails: the policy refuses it, and past the policy the engine's builder grants it to no step", async () => {
    const marker = `kiln-hostnet-${randomBytes(4).toString('hex')}`;
    const df = `FROM debian:bookworm\nRUN --network=host echo ${marker}\n`;
    const r = await sdk(df);
    expect(r.result.error?.code).toBe('policy_violation');
    expect(r.result.error?.message).toMatch(/network/i);
    // The legacy builder has no such flag; the SDK asks for Kiln's network (or none), never the host's.
    const direct = await dockerBuild(
      docker,
      { dockerfileText: df, buildArgs: {} },
      `kiln-guard-test:${randomBytes(6).toString('hex')}`,
      { network: 'none', memoryMb: 512, cpus: 1, timeoutSeconds: 300 },
      quiet(),
    ).then(
      () => 'BUILT',
      (e: Error) => e.message,
    );
    expect(direct).toMatch(/Unknown flag: network/);
    expect(direct).not.toContain(`\n${marker}`);
  }, 300_000);
});

describe('case 39: an engine without the guard is refused (a private dockerd, started here without it)', () => {
  const dir = path.join(os.tmpdir(), `kgd-${randomBytes(3).toString('hex')}`);
  const sock = path.join(dir, 'd.sock');
  let dockerd: ChildProcess | undefined;

  beforeAll(async () => {
    await fsp.mkdir(dir, { mode: 0o700 });
    dockerd = spawn(
      'dockerd',
      [
        '--data-root',
        path.join(dir, 'root'),
        '--exec-root',
        path.join(dir, 'x'),
        '-H',
        `unix://${sock}`,
        '--pidfile',
        path.join(dir, 'd.pid'),
        '--iptables=false',
        '--bridge=none',
        '--storage-driver=overlay2',
        '--cgroup-parent=/kiln-guard-test',
      ],
      { stdio: 'ignore' },
    );
    const priv = new Dockerode({ socketPath: sock });
    for (
      let i = 0;
      i < 240 &&
      !(await priv.ping().then(
        () => true,
        () => false,
      ));
      i++
    )
      await new Promise((r) => setTimeout(r, 250));
  }, 120_000);
  afterAll(async () => {
    if (dockerd?.exitCode === null) {
      dockerd.kill('SIGTERM');
      await new Promise((r) => dockerd!.once('exit', r));
    }
    await fsp.rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('case 39: the check sees the engine connect and refuses, naming the fix', async () => {
    const err = await verifyEngineGuard(new Dockerode({ socketPath: sock })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isKilnError(err, 'backend_unavailable')).toBe(true);
    expect((err as Error).message).toMatch(
      /The Docker engine is not guarded: asked to ADD from this host, it connected/,
    );
    expect((err as Error).message).toContain('scripts/ensure-dockerd.sh');
  });

  it('case 39: kiln sdk build fails closed before any base or build, and says why; sdk.engineGuard=off lets it go on', async () => {
    const df = path.join(dir, 'Dockerfile');
    await fsp.writeFile(df, 'FROM scratch\nLABEL io.kiln.test=guard-off\n');
    const run = (env: Record<string, string>) =>
      runSdkBuild(df, path.join(dir, `out-${randomBytes(3).toString('hex')}`), {
        env: { DOCKER_SOCKET: sock, KILN_SDK_BUILD_NETWORK: 'none', ...env },
      });
    const guarded = await run({});
    expect(guarded.result.error?.code).toBe('backend_unavailable');
    expect(guarded.result.error?.message).toMatch(/not guarded/);
    expect(guarded.result.stages.map((s) => s.name)).toEqual(['policy', 'engine']);
    const off = await run({ KILN_SDK_ENGINE_GUARD: 'off' });
    expect(off.log).toContain('engine guard not verified (sdk.engineGuard=off)');
    expect(off.result.stages.map((s) => s.name)).toContain('build');
    expect(existsSync(sock)).toBe(true);
  }, 300_000);
});
