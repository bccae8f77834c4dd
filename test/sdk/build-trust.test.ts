import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createReadStream, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { checkDockerfile } from '../../src/dockerfile/policy.js';
import { pinBaseImages } from '../../src/dockerfile/pin.js';
import { ensureBase } from '../../src/sdk/base.js';
import { buildProxy, declaredProxyArgs, unreachableProxy } from '../../src/sdk/build-proxy.js';
import {
  CA_BUNDLE,
  loadBuildTrust,
  pemCertificates,
  removeBuildTrust,
  trustLayers,
  type BuildTrust,
} from '../../src/sdk/build-trust.js';
import { dockerBuild, type BuildSettings } from '../../src/sdk/docker-build.js';
import { Reporter } from '../../src/sdk/reporter.js';
import { isKilnError } from '../../src/shared/errors.js';
import { kilnRun, type Run } from '../helpers/kiln.js';
import { startNetnsProxy, type NetnsProxy } from '../helpers/netns-proxy.js';
import { tempDir } from '../helpers/tmp.js';
import { selfSignedCert } from '../helpers/tls.js';

/**
 * Builds behind a TLS-intercepting proxy (src/sdk/build-trust.ts, build-proxy.ts). This machine's outbound HTTPS is
 * intercepted (issuer CN=sandboxing-egress-ca); the host trusts that CA through /usr/local/share/ca-certificates,
 * which is what the builds here are pointed at, as a fresh machine's setup does (README.md).
 */

const HOST_CAS = '/usr/local/share/ca-certificates';
const REGISTRY = 'https://registry.npmjs.org/left-pad';
/** A CA of the test's own that a Dockerfile installs on purpose (COPY + update-ca-certificates); its key is gone. */
const OWN_CA = `-----BEGIN CERTIFICATE-----
MIIBuDCCAV2gAwIBAgIUMF83nd/fqI0AaOAFdEw9/iefrmgwCgYIKoZIzj0EAwIw
MDEuMCwGA1UEAwwlS2lsbiB0ZXN0IENBIGJha2VkIGluIGJ5IGEgRG9ja2VyZmls
ZTAgFw0yNjExMjYwNDIxMjlaGA8yMTI2MTEwMjA0MjEyOVowMDEuMCwGA1UEAwwl
S2lsbiB0ZXN0IENBIGJha2VkIGluIGJ5IGEgRG9ja2VyZmlsZTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABBJ25GokOlLBvfkziXEHiUVtcQEZ8uE/u2eczc1STlIZ
JlO6MEmxID42Jz/X6PKKRd1e49Qvs6tqcW+9tCk4uRGjUzBRMB0GA1UdDgQWBBTA
OCcRFOpCfCp03gXiqD2ytjzekDAfBgNVHSMEGDAWgBTAOCcRFOpCfCp03gXiqD2y
tjzekDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQD/YFlpmSyj
WMAVJ/Usl1VtDlWOrOWqbq3mT6qQpgbxIwIhAPkpB0vreLObVbxlYYc3iIw+Ald/
/TNFl+ImoInNEE9U
-----END CERTIFICATE-----
`;
const OWN_CA_HASH = 'a33127e9';

const t = tempDir('kiln-build-trust-');
afterAll(() => t.cleanup());

const throws = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};
const rejects = async (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );
const sha256Of = (pem: string) =>
  new X509Certificate(pemCertificates(pem)[0]!).fingerprint256.replace(/:/g, '').toLowerCase();
/** The certificates this host adds to Debian's: what the intercepting proxy's CA is among. */
const hostCaPems = () =>
  readdirSync(HOST_CAS)
    .filter((n) => n.endsWith('.crt'))
    .map((n) => readFileSync(path.join(HOST_CAS, n), 'utf8'));

describe('settings', () => {
  it('sdk.buildTrust and sdk.buildProxy come from KILN_SDK_BUILD_* and default to nothing', () => {
    const d = loadConfig({}).sdk;
    expect(d.buildTrust).toEqual({ caFiles: [], keepInImage: false });
    expect(d.buildProxy).toEqual({ noProxy: [] });
    const c = loadConfig({
      KILN_SDK_BUILD_TRUST_CA_FILES: `${HOST_CAS}, /etc/kiln/proxy-ca.pem`,
      KILN_SDK_BUILD_TRUST_KEEP_IN_IMAGE: 'yes',
      KILN_SDK_BUILD_PROXY_HTTP_PROXY: 'http://proxy.example:3128',
      KILN_SDK_BUILD_PROXY_HTTPS_PROXY: 'http://u:p%40ss@proxy.example:3128/',
      KILN_SDK_BUILD_PROXY_NO_PROXY: 'deb.debian.org,.corp.example,10.0.0.0/8',
    }).sdk;
    expect(c.buildTrust).toEqual({ caFiles: [HOST_CAS, '/etc/kiln/proxy-ca.pem'], keepInImage: true });
    expect(c.buildProxy).toEqual({
      httpProxy: 'http://proxy.example:3128',
      httpsProxy: 'http://u:p%40ss@proxy.example:3128/',
      noProxy: ['deb.debian.org', '.corp.example', '10.0.0.0/8'],
    });
  });

  it('a bad proxy URL stops the start naming the variable, never repeating the URL (it may hold a password)', () => {
    for (const bad of [
      'socks5://u:hunter2secret@proxy:1080',
      'http://u:hunter2secret@proxy:3128/path',
      'proxy:3128 hunter2secret',
    ]) {
      const e = throws(() => loadConfig({ KILN_SDK_BUILD_PROXY_HTTPS_PROXY: bad }));
      expect(isKilnError(e, 'invalid_input'), bad).toBe(true);
      expect((e as Error).message).toContain('KILN_SDK_BUILD_PROXY_HTTPS_PROXY');
      expect((e as Error).message).not.toContain('hunter2secret');
    }
    expect(
      isKilnError(
        throws(() => loadConfig({ KILN_SDK_BUILD_PROXY_NO_PROXY: 'a.example, b example' })),
        'invalid_input',
      ),
    ).toBe(true);
  });
});

describe('the CA certificates (loadBuildTrust)', () => {
  it('takes every certificate of the files and directories named, once, and only the certificate bytes', async () => {
    const dir = path.join(t.dir, 'cas');
    await fsp.mkdir(dir);
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'made.crt');
    selfSignedCert({ keyFile: key, certFile: cert, subject: '/CN=made here/O=Kiln tests' });
    // A file an admin might point at by mistake: key and certificate together. Only the certificate may travel.
    await fsp.writeFile(
      path.join(dir, 'bundle.pem'),
      (await fsp.readFile(key, 'utf8')) + (await fsp.readFile(cert, 'utf8')) + OWN_CA,
    );
    await fsp.rm(key);
    const trust = (await loadBuildTrust({ caFiles: [dir, path.join(dir, 'made.crt'), HOST_CAS], keepInImage: false }))!;
    const want = [await fsp.readFile(cert, 'utf8'), OWN_CA, ...hostCaPems()].map(sha256Of);
    expect(trust.certs.map((c) => c.sha256).sort()).toEqual([...new Set(want)].sort());
    const made = trust.certs.find((c) => c.sha256 === sha256Of(readFileSync(cert, 'utf8')))!;
    expect(made.subject).toBe('CN=made here, O=Kiln tests');
    expect(made.fileName).toBe(`kiln-build-trust-${made.sha256.slice(0, 16)}.crt`);
    for (const c of trust.certs) {
      expect(c.pem).toMatch(/^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----\n$/);
      expect(c.pem).not.toContain('PRIVATE KEY');
    }
    // The host's own view of its CAs agrees (what the manifest records).
    for (const pem of hostCaPems()) {
      const fp = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256'], {
        input: pem,
        encoding: 'utf8',
      })
        .split('=')[1]!
        .trim()
        .replace(/:/g, '')
        .toLowerCase();
      expect(trust.certs.map((c) => c.sha256)).toContain(fp);
    }
  });

  it('none configured is none; a missing path, a file without a certificate or an empty directory is refused, naming it', async () => {
    expect(await loadBuildTrust({ caFiles: [], keepInImage: false })).toBeUndefined();
    const empty = path.join(t.dir, 'empty-dir');
    await fsp.mkdir(empty);
    const text = path.join(t.dir, 'not-a-cert.pem');
    await fsp.writeFile(text, 'hello\n');
    for (const bad of [path.join(t.dir, 'missing.pem'), text, empty]) {
      const e = await rejects(loadBuildTrust({ caFiles: [bad], keepInImage: false }));
      expect(isKilnError(e, 'invalid_input'), bad).toBe(true);
      expect((e as Error).message).toContain(bad);
    }
  });
});

describe('the proxy settings (buildProxy)', () => {
  it('become the predefined proxy args in both cases; what is shown has no credentials; the log masks them', () => {
    const p = buildProxy({
      httpProxy: 'http://proxy.example:3128',
      httpsProxy: 'http://alice:s3cr%40tpass@proxy.example:3129',
      noProxy: ['deb.debian.org', '.corp'],
    })!;
    expect(p.args).toEqual({
      HTTP_PROXY: 'http://proxy.example:3128',
      http_proxy: 'http://proxy.example:3128',
      HTTPS_PROXY: 'http://alice:s3cr%40tpass@proxy.example:3129',
      https_proxy: 'http://alice:s3cr%40tpass@proxy.example:3129',
      NO_PROXY: 'deb.debian.org,.corp',
      no_proxy: 'deb.debian.org,.corp',
    });
    expect(p.summary).toEqual({
      httpProxy: 'http://proxy.example:3128',
      httpsProxy: 'http://proxy.example:3129',
      noProxy: ['deb.debian.org', '.corp'],
    });
    expect(JSON.stringify(p.summary)).not.toMatch(/alice|s3cr/);
    expect(p.urls).toEqual(['http://proxy.example:3128', 'http://alice:s3cr%40tpass@proxy.example:3129']);
    let shown = '';
    const rep = new Reporter(undefined, 1 << 20, (s) => {
      shown += s;
    });
    for (const s of p.secrets) rep.mask(s);
    rep.output('env: https_proxy=http://alice:s3cr%40tpass@proxy.example:3129\npassword s3cr@tpass and s3cr%40tpass\n');
    rep.progress('build', 10, 'using http://alice:s3cr%40tpass@proxy.example:3129');
    expect(shown).not.toMatch(/s3cr/);
    expect(shown).toContain('https_proxy=http://***@proxy.example:3129');
    expect(buildProxy({ noProxy: ['x'] })).toBeUndefined();
  });

  it('the build network lets RUN steps reach the proxy, also on a private address (also in the rules for an engine elsewhere)', async () => {
    const r = await kilnRun(
      ['sdk', 'egress-rules', '--engine-iptables', '--resolver', '10.0.0.53', '--lan', '172.18.0.0/16'],
      {
        KILN_SDK_BUILD_PROXY_HTTPS_PROXY: 'http://alice:hunter2secret@10.9.8.7:3128',
        KILN_SDK_MIRROR: 'http://203.0.113.80/debian',
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const out = r.stdout.split('\n');
    const at = out.indexOf('-A KILN-BUILD-OUT -d 10.9.8.7/32 -p tcp -m tcp --dport 3128 -j ACCEPT');
    expect(at).toBeGreaterThanOrEqual(0);
    expect(at).toBeLessThan(
      out.indexOf('-A KILN-BUILD-OUT -d 10.0.0.0/8 -j REJECT --reject-with icmp-admin-prohibited'),
    );
    expect(r.stdout + r.stderr).not.toContain('hunter2secret');
  });

  it('says when RUN steps could not reach the proxy (loopback, this host), and which proxy ARGs a Dockerfile declares', () => {
    expect(unreachableProxy('http://127.0.0.1:3128', [])).toMatch(/loopback/);
    expect(unreachableProxy('http://192.0.2.2:3128', ['192.0.2.2'])).toMatch(/address of this host/);
    expect(unreachableProxy('http://10.1.2.3:3128', ['192.0.2.2'])).toBeUndefined();
    expect(
      declaredProxyArgs('FROM debian:bookworm\nARG https_proxy\narg HTTP_PROXY=x OTHER\nRUN true\n').sort(),
    ).toEqual(['HTTP_PROXY', 'https_proxy']);
  });
});

/** A tree shaped like a built image's, made by hand: what update-ca-certificates and openssl rehash leave. */
async function fakeTree(trust: BuildTrust, o: { caInstalled: boolean }): Promise<string> {
  const root = await fsp.mkdtemp(path.join(t.dir, 'tree-'));
  const local = path.join(root, 'usr/local/share/ca-certificates');
  const etc = path.join(root, 'etc/ssl/certs');
  await fsp.mkdir(local, { recursive: true });
  await fsp.mkdir(etc, { recursive: true });
  await fsp.mkdir(path.join(root, 'var/lib/dpkg'), { recursive: true });
  await fsp.writeFile(
    path.join(root, 'var/lib/dpkg/status'),
    o.caInstalled
      ? 'Package: ca-certificates\nStatus: install ok installed\nVersion: 20230311\nArchitecture: all\n\n'
      : '',
  );
  for (const c of trust.certs) await fsp.writeFile(path.join(local, c.fileName), c.pem);
  return root;
}

describe('taking the build CAs out of a tree (removeBuildTrust)', () => {
  let trust: BuildTrust;
  beforeAll(async () => {
    const f = path.join(t.dir, 'own.pem');
    await fsp.writeFile(f, OWN_CA);
    trust = (await loadBuildTrust({ caFiles: [f], keepInImage: false }))!;
  });

  it("without ca-certificates: the file and the directory Kiln's layer made go, nothing else", async () => {
    const root = await fakeTree(trust, { caInstalled: false });
    await fsp.writeFile(path.join(root, 'etc/ssl/certs/unrelated.pem'), 'x');
    const r = await removeBuildTrust(root, trust);
    expect(r.removed).toEqual([
      `/usr/local/share/ca-certificates/${trust.certs[0]!.fileName}`,
      '/usr/local/share/ca-certificates',
    ]);
    expect(readdirSync(path.join(root, 'usr/local/share'))).toEqual([]);
    expect(readdirSync(path.join(root, 'etc/ssl/certs'))).toEqual(['unrelated.pem']);
  });

  it("a hash link of Kiln's CA goes and the next number of that hash moves down; a file changed since, or a bundle it never made, stays", async () => {
    const c = trust.certs[0]!;
    const root = await fakeTree(trust, { caInstalled: true });
    const etc = path.join(root, 'etc/ssl/certs');
    await fsp.symlink(
      `/usr/local/share/ca-certificates/${c.fileName}`,
      path.join(etc, c.fileName.replace('.crt', '.pem')),
    );
    await fsp.symlink(c.fileName.replace('.crt', '.pem'), path.join(etc, `${OWN_CA_HASH}.0`));
    await fsp.writeFile(path.join(etc, 'other.pem'), 'another certificate with the same subject hash');
    await fsp.symlink('other.pem', path.join(etc, `${OWN_CA_HASH}.1`));
    const bundle = `-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n${c.pem}`;
    await fsp.writeFile(path.join(etc, 'ca-certificates.crt'), bundle);
    const r = await removeBuildTrust(root, trust);
    expect(await fsp.readlink(path.join(etc, `${OWN_CA_HASH}.0`))).toBe('other.pem');
    await expect(fsp.lstat(path.join(etc, `${OWN_CA_HASH}.1`))).rejects.toThrow();
    expect(await fsp.readFile(path.join(etc, 'ca-certificates.crt'), 'utf8')).toBe(
      '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
    );
    // ca-certificates is installed: its postinst would have made the directory, so it stays.
    expect(r.removed).not.toContain('/usr/local/share/ca-certificates');
    expect(readdirSync(path.join(root, 'usr/local/share/ca-certificates'))).toEqual([]);

    const root2 = await fakeTree(trust, { caInstalled: false });
    await fsp.appendFile(
      path.join(root2, 'usr/local/share/ca-certificates', c.fileName),
      '# changed by the Dockerfile\n',
    );
    // No link of Kiln's: this bundle was not made from Kiln's file (the Dockerfile wrote it), so it is not edited.
    await fsp.mkdir(path.join(root2, 'etc/ssl/certs'), { recursive: true });
    await fsp.writeFile(path.join(root2, CA_BUNDLE), c.pem);
    const r2 = await removeBuildTrust(root2, trust);
    expect(r2.removed).toEqual([]);
    expect(await fsp.readFile(path.join(root2, CA_BUNDLE), 'utf8')).toBe(c.pem);
  });

  it("when the Dockerfile installed the same CA itself and rehash linked Kiln's copy, the hash link moves to the Dockerfile's", async () => {
    const c = trust.certs[0]!;
    const root = await fakeTree(trust, { caInstalled: true });
    const etc = path.join(root, 'etc/ssl/certs');
    await fsp.writeFile(path.join(root, 'usr/local/share/ca-certificates/corp.crt'), OWN_CA);
    await fsp.symlink('/usr/local/share/ca-certificates/corp.crt', path.join(etc, 'corp.pem'));
    await fsp.symlink(
      `/usr/local/share/ca-certificates/${c.fileName}`,
      path.join(etc, c.fileName.replace('.crt', '.pem')),
    );
    await fsp.symlink(c.fileName.replace('.crt', '.pem'), path.join(etc, `${OWN_CA_HASH}.0`));
    // update-ca-certificates appended both files: the same block twice.
    await fsp.writeFile(path.join(etc, 'ca-certificates.crt'), OWN_CA + c.pem);
    const r = await removeBuildTrust(root, trust);
    expect(await fsp.readlink(path.join(etc, `${OWN_CA_HASH}.0`))).toBe('corp.pem');
    expect(r.notes.join('\n')).toContain('corp.pem');
    expect(await fsp.readFile(path.join(etc, 'ca-certificates.crt'), 'utf8')).toBe(OWN_CA);
    expect(readdirSync(path.join(root, 'usr/local/share/ca-certificates'))).toEqual(['corp.crt']);
    expect(readdirSync(etc).sort()).toEqual([`${OWN_CA_HASH}.0`, 'ca-certificates.crt', 'corp.pem']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Against the real engine, through this machine's real intercepting proxy.

const docker = new Dockerode({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
const egress = {
  subnet: '10.213.0.0/24',
  mirrors: ['http://deb.debian.org/debian'],
  allow: [] as string[],
  rules: 'apply' as const,
};
const settings: BuildSettings = { network: 'filtered', egress, memoryMb: 2048, cpus: 2, timeoutSeconds: 1500 };
const TOOLS = 'curl ca-certificates python3 python3-pip nodejs';
/** Each tool fetches from the npm registry over HTTPS and prints `<tool> ok`, or `<tool> failed:` and its error. */
const FETCHES = [
  `curl -fsS -o /dev/null ${REGISTRY} 2>/tmp/e && echo "curl ok" || echo "curl failed: $(cat /tmp/e)"`,
  `python3 -c "import urllib.request; urllib.request.urlopen('${REGISTRY}').read(); print('python ok')" 2>/tmp/e || echo "python failed: $(tail -1 /tmp/e)"`,
  `python3 -c "from pip._vendor import requests; requests.get('${REGISTRY}').raise_for_status(); print('pip ok')" 2>/tmp/e || echo "pip failed: $(tail -1 /tmp/e)"`,
  `node -e "require('https').get('${REGISTRY}', (r) => console.log(r.statusCode === 200 ? 'node ok' : 'node failed: ' + r.statusCode)).on('error', (e) => console.log('node failed: ' + e.message))"`,
];

/** Whether the host's TLS to the registry is intercepted: Node's own CA store (Mozilla's) does not know the issuer. */
function interceptedHere(): Promise<string> {
  return new Promise((resolve) => {
    https
      .get(REGISTRY, { ca: [...tls.rootCertificates] }, (r) => {
        r.resume();
        resolve(`not intercepted (HTTP ${r.statusCode})`);
      })
      .on('error', (e: NodeJS.ErrnoException) => resolve(String(e.code)));
  });
}

describe('RUN steps behind the intercepting proxy (real dockerd, real network)', () => {
  beforeAll(async () => {
    // Without interception none of this can be shown: say so rather than pass.
    expect(await interceptedHere(), "this machine's HTTPS must go through a TLS-intercepting proxy").toBe(
      'SELF_SIGNED_CERT_IN_CHAIN',
    );
    await ensureBase(
      docker,
      'debian:bookworm',
      { mirror: 'http://deb.debian.org/debian' },
      t.dir,
      new Reporter(undefined, 1 << 24, () => undefined),
    );
  }, 900_000);

  it('without sdk.buildTrust every tool\'s HTTPS fetch fails to verify: "self-signed certificate in certificate chain"', async () => {
    let log = '';
    const rep = new Reporter(undefined, 1 << 24, (s) => {
      log += s;
    });
    const text = `FROM debian:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends ${TOOLS} && rm -rf /var/lib/apt/lists/*\nRUN ${FETCHES.join('; ')}; exit 1\n`;
    const e = await rejects(
      dockerBuild(docker, { dockerfileText: text, buildArgs: {} }, 'kiln-build:trust-test-none', settings, rep),
    );
    expect(isKilnError(e, 'build_failed')).toBe(true);
    expect(log).toMatch(
      /curl failed: curl: \(60\) SSL certificate problem: self-signed certificate in certificate chain/,
    );
    expect(log).toMatch(/python failed: .*CERTIFICATE_VERIFY_FAILED.*self-signed certificate in certificate chain/);
    expect(log).toMatch(/pip failed: .*CERTIFICATE_VERIFY_FAILED.*self-signed certificate in certificate chain/);
    expect(log).toMatch(/node failed: self-signed certificate in certificate chain/);
    expect(log).not.toMatch(/^(curl|python|pip|node) ok$/m);
  }, 1_500_000);

  it("another set of CAs never reuses layers built on another (the FROM names Kiln's layer for that set); the image config stays the Dockerfile's", async () => {
    const rep = new Reporter(undefined, 1 << 24, () => undefined);
    const base = (await docker.getImage('debian:bookworm').inspect()).Id;
    const text =
      'FROM debian:bookworm\nENV APP_MODE="a b" PATH=/opt/app/bin:$PATH\nWORKDIR /srv/app\nRUN echo same step > /step\nUSER 1000:1000\nCMD ["./run.sh"]\n';
    const froms = checkDockerfile(text, { bases: ['debian:bookworm'], allowRemoteAdd: false }).froms;
    const own = path.join(t.dir, 'own-ca.pem');
    await fsp.writeFile(own, OWN_CA);
    const sets = [[own], [HOST_CAS], [HOST_CAS, own]];
    const ids: string[] = [];
    for (const caFiles of [...sets, sets[0]!]) {
      const trust = (await loadBuildTrust({ caFiles, keepInImage: false }))!;
      const buildText = pinBaseImages(
        text,
        froms,
        await trustLayers(docker, [{ name: 'debian:bookworm', id: base }], trust, settings, t.dir, rep),
      );
      ids.push(
        (
          await dockerBuild(
            docker,
            { dockerfileText: buildText, buildArgs: {} },
            `kiln-build:trust-test-cache-${ids.length}`,
            { ...settings, network: 'none' },
            rep,
          )
        ).id,
      );
    }
    const plain = (
      await dockerBuild(
        docker,
        { dockerfileText: pinBaseImages(text, froms, { 'debian:bookworm': base }), buildArgs: {} },
        'kiln-build:trust-test-cache-plain',
        { ...settings, network: 'none' },
        rep,
      )
    ).id;
    expect(new Set([...ids.slice(0, 3), plain]).size).toBe(4);
    // The same set again reuses its own layers.
    expect(ids[3]).toBe(ids[0]);
    // What the app service and the manifest read from the image is the same with and without build trust.
    const config = async (id: string) => {
      const c = (await docker.getImage(id).inspect()).Config;
      return {
        env: c.Env,
        cmd: c.Cmd,
        entrypoint: c.Entrypoint,
        workdir: c.WorkingDir,
        user: c.User,
        labels: c.Labels,
        shell: (c as { Shell?: string[] }).Shell,
        ports: c.ExposedPorts,
        volumes: c.Volumes,
        onbuild: c.OnBuild,
      };
    };
    for (const id of ids) expect(await config(id)).toEqual(await config(plain));
    for (const tag of ['0', '1', '2', '3', 'plain'])
      await docker
        .getImage(`kiln-build:trust-test-cache-${tag}`)
        .remove()
        .catch(() => undefined);
  }, 600_000);

  describe('kiln sdk build with sdk.buildTrust and sdk.buildProxy (one build, boot-tested)', () => {
    const out = path.join(t.dir, 'out');
    const ctx = path.join(t.dir, 'ctx');
    let proxy: NetnsProxy;
    let run: Run;
    let log: string;
    let manifest: {
      image: { id: string; tag: string };
      buildTrust: Record<string, unknown>;
      buildProxy: Record<string, unknown>;
    };
    let trust: BuildTrust;

    beforeAll(async () => {
      proxy = await startNetnsProxy();
      await fsp.mkdir(ctx);
      await fsp.writeFile(path.join(ctx, 'own-ca.crt'), OWN_CA);
      await fsp.writeFile(path.join(t.dir, 'own-ca.pem'), OWN_CA);
      // The Dockerfile installs the test's own CA on purpose, as corporate CI Dockerfiles do; the kernel and init are
      // its own, and the fetches come after a fresh ARG, so only they run again on the next run of this test.
      await fsp.writeFile(
        path.join(ctx, 'Dockerfile'),
        [
          'FROM debian:bookworm',
          `RUN apt-get update && apt-get install -y --no-install-recommends ${TOOLS} linux-image-amd64 systemd-sysv && rm -rf /var/lib/apt/lists/*`,
          'COPY own-ca.crt /usr/local/share/ca-certificates/own-ca.crt',
          'RUN update-ca-certificates',
          'ARG NONCE',
          `RUN echo "run $NONCE; proxy is $https_proxy" && ${FETCHES.join(' && ')}`,
          '',
        ].join('\n'),
      );
      trust = (await loadBuildTrust({ caFiles: [HOST_CAS, path.join(t.dir, 'own-ca.pem')], keepInImage: false }))!;
      run = await kilnRun(
        [
          'sdk',
          'build',
          '--dockerfile',
          path.join(ctx, 'Dockerfile'),
          '--context',
          ctx,
          '--out',
          out,
          '--format',
          'raw,tar',
          '--boot-firmware',
          'bios',
          '--build-arg',
          `NONCE=${Date.now()}`,
        ],
        {
          KILN_SDK_BUILD_TRUST_CA_FILES: `${HOST_CAS},${path.join(t.dir, 'own-ca.pem')}`,
          KILN_SDK_BUILD_PROXY_HTTP_PROXY: proxy.url,
          KILN_SDK_BUILD_PROXY_HTTPS_PROXY: proxy.url,
          KILN_SDK_BUILD_PROXY_NO_PROXY: 'deb.debian.org',
        },
      );
      log = await fsp.readFile(path.join(out, 'build.log'), 'utf8');
      manifest = JSON.parse(await fsp.readFile(path.join(out, 'manifest.json'), 'utf8'));
    }, 1_800_000);
    afterAll(async () => {
      await proxy?.close();
    });

    it('builds and boots; curl, python, pip and node each fetched from the registry through the interception', () => {
      expect(run.code, log.slice(-3000)).toBe(0);
      for (const tool of ['curl', 'python', 'pip', 'node']) expect(log).toMatch(new RegExp(`^${tool} ok$`, 'm'));
      expect(log).toMatch(/\[kiln\] boot test image\.raw \(bios\): passed/);
    });

    it('RUN steps used the proxy with its credentials (proxy-aware tools), and NO_PROXY kept apt away from it', () => {
      const connects = proxy.seen.filter((s) => s.method === 'CONNECT' && s.target === 'registry.npmjs.org:443');
      // curl, urllib and pip's requests honour https_proxy; Node's https module does not (it went straight out).
      expect(connects.length).toBeGreaterThanOrEqual(3);
      expect(proxy.seen.every((s) => s.authorized)).toBe(true);
      expect(proxy.seen.filter((s) => s.target.includes('deb.debian.org'))).toEqual([]);
      expect(log).toContain(`proxy is http://***@${proxy.host}:${proxy.port}`);
      expect(log).toMatch(
        new RegExp(`build network kiln-build .*allowed: .*${proxy.host.replace(/\./g, '\\.')}/32:${proxy.port}`),
      );
    });

    it("the proxy's password is nowhere: not in the log, the SDK's output, manifest, provenance or any other file written", async () => {
      expect(run.stdout + run.stderr).not.toContain(proxy.password);
      for (const name of readdirSync(out)) {
        if (name.startsWith('image.') || name.endsWith('.zst')) continue;
        expect(await fsp.readFile(path.join(out, name), 'utf8'), name).not.toContain(proxy.password);
      }
    });

    it('manifest and provenance record the CAs (subject, sha256), that they were removed, and the proxy without credentials', async () => {
      const cas = manifest.buildTrust.caCertificates as { subject: string; sha256: string }[];
      expect(cas.map((c) => c.sha256).sort()).toEqual(trust.certs.map((c) => c.sha256).sort());
      expect(cas.map((c) => c.subject)).toContain('CN=Kiln test CA baked in by a Dockerfile');
      expect(manifest.buildTrust.inImage).toBe('removed');
      expect(manifest.buildProxy).toEqual({
        httpProxy: `http://${proxy.host}:${proxy.port}`,
        httpsProxy: `http://${proxy.host}:${proxy.port}`,
        noProxy: ['deb.debian.org'],
        inImage: false,
      });
      const prov = JSON.parse(await fsp.readFile(path.join(out, 'provenance.json'), 'utf8'));
      const internal = prov.predicate.buildDefinition.internalParameters;
      expect(internal.buildTrust).toEqual({ caSha256: trust.certs.map((c) => c.sha256), inImage: 'removed' });
      expect(internal.buildProxy).toEqual({
        httpProxy: `http://${proxy.host}:${proxy.port}`,
        httpsProxy: `http://${proxy.host}:${proxy.port}`,
        noProxy: ['deb.debian.org'],
      });
    });

    it("the built image's config, container config and history hold no proxy setting", async () => {
      for (const ref of [manifest.image.id, manifest.image.tag]) {
        const info = await docker.getImage(ref).inspect();
        const env = [...(info.Config.Env ?? []), ...(info.ContainerConfig?.Env ?? [])];
        expect(env.filter((e) => /^(https?|no|ftp)_proxy=/i.test(e))).toEqual([]);
        const history = JSON.stringify(await docker.getImage(ref).history());
        for (const text of [JSON.stringify(info), history]) {
          expect(text).not.toContain(proxy.password);
          expect(text).not.toContain(proxy.host);
        }
      }
    });

    it("the finished tree and the disk hold none of the build CAs' bytes; the Dockerfile's own CA stays, linked and in the bundle once", async () => {
      const tree = path.join(t.dir, 'tree');
      await fsp.mkdir(tree);
      execFileSync('tar', [
        '--zstd',
        '-xf',
        path.join(out, 'rootfs.tar.zst'),
        '-C',
        tree,
        './etc/ssl/certs',
        './usr/local/share/ca-certificates',
        './usr/share/ca-certificates',
      ]);
      const local = readdirSync(path.join(tree, 'usr/local/share/ca-certificates'));
      expect(local).toEqual(['own-ca.crt']);
      const etc = readdirSync(path.join(tree, 'etc/ssl/certs'));
      expect(etc.filter((n) => n.includes('kiln'))).toEqual([]);
      expect(await fsp.readlink(path.join(tree, 'etc/ssl/certs/own-ca.pem'))).toBe(
        '/usr/local/share/ca-certificates/own-ca.crt',
      );
      expect(await fsp.readlink(path.join(tree, `etc/ssl/certs/${OWN_CA_HASH}.0`))).toBe('own-ca.pem');
      const bundle = await fsp.readFile(path.join(tree, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
      expect(bundle.split(OWN_CA).length - 1).toBe(1);
      // Every hash link resolves (no dangling link, no gap left where Kiln's was).
      for (const n of etc.filter((x) => /^[0-9a-f]{8}\.\d+$/.test(x)))
        expect((await fsp.stat(await inTree(tree, `/etc/ssl/certs/${n}`))).isFile(), n).toBe(true);
      // Bytes of each build CA that the Dockerfile did not install itself: DER and PEM text, in the whole tar stream and disk.
      const gone = trust.certs.filter((c) => c.sha256 !== sha256Of(OWN_CA));
      expect(gone.length).toBeGreaterThan(0);
      const needles = gone.flatMap((c) => [
        pemCertificates(c.pem)[0]!.subarray(0, 200),
        Buffer.from(c.pem.split('\n')[2]!),
      ]);
      const ownLine = Buffer.from(OWN_CA.split('\n')[2]!);
      const tarStream = spawn('zstd', ['-dc', path.join(out, 'rootfs.tar.zst')], {
        stdio: ['ignore', 'pipe', 'inherit'],
      }).stdout;
      expect(await found(tarStream, [...needles, Buffer.from(proxy.password), ownLine])).toEqual([
        ...needles.map(() => false),
        false,
        true,
      ]);
      expect(
        await found(createReadStream(path.join(out, 'image.raw'), { highWaterMark: 8 << 20 }), [
          ...needles,
          Buffer.from(proxy.password),
        ]),
      ).toEqual([...needles.map(() => false), false]);
    }, 600_000);

    it('with sdk.buildTrust.keepInImage the CA stays in the image, and the manifest says so', async () => {
      const out2 = path.join(t.dir, 'out-keep');
      const r = await kilnRun(
        [
          'sdk',
          'build',
          '--dockerfile',
          path.join(ctx, 'Dockerfile'),
          '--context',
          ctx,
          '--out',
          out2,
          '--format',
          'tar',
          '--boot-firmware',
          '',
          '--build-arg',
          'NONCE=keep',
        ],
        {
          KILN_SDK_BUILD_TRUST_CA_FILES: `${HOST_CAS},${path.join(t.dir, 'own-ca.pem')}`,
          KILN_SDK_BUILD_TRUST_KEEP_IN_IMAGE: 'true',
          KILN_SDK_BUILD_PROXY_HTTPS_PROXY: proxy.url,
          KILN_SDK_BUILD_PROXY_NO_PROXY: 'deb.debian.org',
        },
      );
      expect(r.code, await fsp.readFile(path.join(out2, 'build.log'), 'utf8').then((s) => s.slice(-2000))).toBe(0);
      const m = JSON.parse(await fsp.readFile(path.join(out2, 'manifest.json'), 'utf8'));
      expect(m.buildTrust.inImage).toBe('kept');
      const names = execFileSync(
        'tar',
        ['--zstd', '-tf', path.join(out2, 'rootfs.tar.zst'), './usr/local/share/ca-certificates'],
        { encoding: 'utf8' },
      );
      for (const c of trust.certs) expect(names).toContain(c.fileName);
    }, 1_200_000);
  });
});

/** The host path of a guest path of an extracted tree, following links (up to 8) as the guest would. */
async function inTree(tree: string, guest: string): Promise<string> {
  let p = guest;
  for (let i = 0; i < 8; i++) {
    const target = await fsp.readlink(path.join(tree, p)).catch(() => undefined);
    if (target === undefined) break;
    p = path.posix.resolve(path.posix.dirname(p), target);
  }
  return path.join(tree, p);
}

/** Which of the byte strings a (large) stream contains, read with an overlap as long as the longest. */
async function found(stream: AsyncIterable<unknown>, needles: Buffer[]): Promise<boolean[]> {
  const keep = Math.max(...needles.map((n) => n.length));
  const hit = needles.map(() => false);
  let tail = Buffer.alloc(0);
  for await (const chunk of stream) {
    const buf = Buffer.concat([tail, chunk as Buffer]);
    needles.forEach((n, i) => {
      hit[i] ||= buf.includes(n);
    });
    tail = buf.subarray(Math.max(0, buf.length - keep));
  }
  return hit;
}
