/**
 * What a git source may name (src/core/git/url.ts), parsed before anything is stored or run, and the webhook's
 * signature check (src/core/git/hooks.ts).
 */
import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signedWith } from '../../src/core/git/hooks.js';
import { resolveRelative, gitSaid } from '../../src/core/git/fetch.js';
import { branchOf, matchKey, parseGitUrl, parseRef, parseRepoPath } from '../../src/core/git/url.js';
import { buildProvenance } from '../../src/sdk/provenance.js';
import { specSha256 } from '../../src/protocol/index.js';

const refusedWith = (raw: string, re: RegExp, mirrors: string[] = []) =>
  expect(() => parseGitUrl(raw, mirrors), raw).toThrow(re);

describe('repository URLs', () => {
  it('accepts https, ssh (URL and scp-like) and git URLs, as they are written', () => {
    expect(parseGitUrl('https://git.example.com/team/images.git')).toMatchObject({
      kind: 'https',
      host: 'git.example.com',
      url: 'https://git.example.com/team/images.git',
    });
    expect(parseGitUrl('  git@github.com:team/images.git ')).toMatchObject({
      kind: 'ssh',
      host: 'github.com',
      user: 'git',
      path: 'team/images.git',
      scp: true,
      url: 'git@github.com:team/images.git',
    });
    expect(parseGitUrl('ssh://git@git.example.com:2222/team/images.git')).toMatchObject({
      kind: 'ssh',
      port: 2222,
      url: 'ssh://git@git.example.com:2222/team/images.git',
    });
    expect(parseGitUrl('git://[::1]:9418/x.git')).toMatchObject({ kind: 'git', host: '::1', port: 9418 });
  });

  it('case 39: refuses remote helpers (ext::, fd::), options in disguise, plain http, local paths and file:// outside the mirrors', () => {
    refusedWith('ext::sh -c touch% /tmp/pwned', /Remote helpers|spaces/);
    refusedWith('ext::sh', /Remote helpers/);
    refusedWith('fd::17', /Remote helpers/);
    refusedWith('transport::https://x/y', /Remote helpers/);
    refusedWith('-oProxyCommand=touch /tmp/pwned', /spaces|start with "-"/);
    refusedWith('-oProxyCommand=id', /start with "-"/);
    refusedWith('--upload-pack=touch', /start with "-"/);
    refusedWith('ssh://-oProxyCommand=id/x', /no valid host/);
    refusedWith('git@-oProxyCommand=id:x', /no valid host/);
    refusedWith('http://git.example.com/x.git', /Plain http/);
    refusedWith('/srv/git/images.git', /file:\/\/ and an admin-configured mirror/);
    refusedWith('./images', /file:\/\/ and an admin-configured mirror/);
    refusedWith('file:///srv/git/images.git', /no local mirror directories/);
    refusedWith('file:///etc/images.git', /only inside the local mirror/, ['/srv/git']);
    refusedWith('file:///srv/git/../../etc/x.git', /only inside the local mirror/, ['/srv/git']);
    expect(parseGitUrl('file:///srv/git/team/images.git', ['/srv/git'])).toMatchObject({
      kind: 'file',
      path: '/srv/git/team/images.git',
    });
    // WHATWG reads https://127.1 as 127.0.0.1, which the address check then refuses; git:// hosts must be plain.
    expect(parseGitUrl('https://127.1/x.git').host).toBe('127.0.0.1');
    expect(() => parseGitUrl('git://127.1/x.git')).toThrow(/no valid host/);
    expect(() => parseGitUrl('git://2130706433/x.git')).toThrow(/no valid host/);
    refusedWith('gopher://x/y', /not allowed/);
    refusedWith('https://x.example/a b', /spaces/);
    refusedWith('https://x.example/x?y=1', /query/);
  });

  it('refuses credentials in URLs and never repeats them in the message', () => {
    for (const raw of [
      'https://user:s3cr3t-pw@git.example.com/x.git',
      'https://ghp_s3cr3ttoken@git.example.com/x.git',
      'ssh://git:s3cr3t-pw@git.example.com/x.git',
      'git://user@git.example.com/x.git',
      'git:s3cr3t-pw@git.example.com:x.git',
    ]) {
      let message = '';
      try {
        parseGitUrl(raw);
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message, raw).toMatch(/Credentials|password or token|not valid|may not contain "@"/);
      expect(message, raw).not.toMatch(/s3cr3t/);
    }
  });

  it('the match key names one repository however a forge writes it', () => {
    const k = 'git.example.com/team/images';
    for (const u of [
      'https://git.example.com/team/images.git',
      'https://git.example.com/Team/Images',
      'https://git.example.com:8443/team/images/',
      'git@git.example.com:team/images.git',
      'ssh://git@git.example.com:2222/team/images.git',
      'git://git.example.com/team/images.git',
    ])
      expect(matchKey(u), u).toBe(k);
    expect(matchKey('not a url')).toBeUndefined();
  });

  it('resolves relative submodule URLs against the superproject and refuses ones that leave the server', () => {
    const base = parseGitUrl('https://git.example.com/team/images.git');
    expect(resolveRelative('../lib.git', base)).toBe('https://git.example.com/team/lib.git');
    expect(resolveRelative('https://other.example/x.git', base)).toBe('https://other.example/x.git');
    expect(resolveRelative('../lib.git', parseGitUrl('git@h.example:team/images.git'))).toBe(
      'git@h.example:team/lib.git',
    );
    expect(resolveRelative('./sub/x.git', base)).toBe('https://git.example.com/team/images.git/sub/x.git');
    expect(() => resolveRelative('../../../x', base)).toThrow(/leaves the server/);
  });

  it("git's messages are shown as one line without control characters or credentials", () => {
    expect(gitSaid("hint: x\nfatal: unable to access 'https://u:p@h/x': \x1b[31mboom\r\n")).toBe(
      "fatal: unable to access 'https://h/x': [31mboom",
    );
  });
});

describe('refs and paths', () => {
  it('accepts branch, tag, full ref and commit names; refuses what git or a shell would misread', () => {
    for (const ok of ['main', 'release/1.x', 'v1.2.3', 'refs/heads/main', 'HEAD', 'a'.repeat(40)])
      expect(parseRef(ok)).toBe(ok);
    expect(parseRef('')).toBe('HEAD');
    for (const bad of [
      '--upload-pack=x',
      '-x',
      'a..b',
      'main.lock',
      'a//b',
      'x y',
      'a~1',
      'a^',
      'a:b',
      'x@{1}',
      '.hidden',
      'a/.b',
      'x\ny',
    ])
      expect(() => parseRef(bad), bad).toThrow(/not a valid/);
    expect(branchOf('main')).toBe('main');
    expect(branchOf('refs/heads/dev')).toBe('dev');
    expect(branchOf('refs/tags/v1')).toBeUndefined();
    expect(branchOf('HEAD')).toBeUndefined();
    expect(branchOf('a'.repeat(40))).toBeUndefined();
  });

  it('case 19, case 21: paths stay inside the repository: no "..", absolute names, backslashes, control or direction marks', () => {
    const p = (v: unknown, dir = false) => parseRepoPath(v, { dir, what: 'The path' });
    expect(p('./docker/Dockerfile')).toBe('docker/Dockerfile');
    expect(p('docker/', true)).toBe('docker');
    expect(p('.', true)).toBe('');
    expect(p('/', true)).toBe('');
    for (const bad of [
      '../../etc/passwd',
      '/etc/passwd',
      'a/../../b',
      'a/./b',
      '..\\..\\etc',
      'Dockerfile\u202e',
      'a\u0000b',
      'a\nb',
      '%2e%2e/x/../..',
      'x'.repeat(256),
    ])
      expect(() => p(bad), JSON.stringify(bad)).toThrow();
  });
});

describe('push signatures', () => {
  const body = Buffer.from('{"ref":"refs/heads/main"}');
  const hex = (secret: string) => createHmac('sha256', secret).update(body).digest('hex');

  it('GitHub X-Hub-Signature-256, Gitea X-Gitea-Signature (HMAC-SHA256 of the body) and GitLab X-Gitlab-Token', () => {
    expect(signedWith({ body, headers: { 'x-hub-signature-256': `sha256=${hex('s1')}` } }, 's1')).toBe(true);
    expect(signedWith({ body, headers: { 'x-gitea-signature': hex('s1') } }, 's1')).toBe(true);
    expect(signedWith({ body, headers: { 'x-gitlab-token': 's1' } }, 's1')).toBe(true);
    for (const headers of [
      { 'x-hub-signature-256': `sha256=${hex('s2')}` },
      { 'x-hub-signature-256': hex('s1') },
      { 'x-hub-signature-256': `sha256=${hex('s1').slice(0, 63)}` },
      { 'x-hub-signature-256': `sha1=${hex('s1')}` },
      { 'x-gitea-signature': `${hex('s1')}00` },
      { 'x-gitlab-token': 's1 ' },
      { 'x-gitlab-token': '' },
      {},
    ])
      expect(signedWith({ body, headers }, 's1'), JSON.stringify(headers)).toBe(false);
    // The signature covers the body's bytes: one byte more is another body.
    expect(
      signedWith(
        { body: Buffer.concat([body, Buffer.from(' ')]), headers: { 'x-hub-signature-256': `sha256=${hex('s1')}` } },
        's1',
      ),
    ).toBe(false);
  });
});

describe('the commit in the provenance and in the spec digest', () => {
  const source = {
    type: 'git' as const,
    url: 'https://git.example.com/team/images.git',
    ref: 'main',
    commit: 'a'.repeat(40),
    path: 'Dockerfile',
    context: '',
  };

  it('the provenance names the repository and ref as a parameter and the commit as a resolved dependency', () => {
    const p = buildProvenance({
      artifacts: [],
      extraSubjects: [],
      dockerfileSha256: 'd'.repeat(64),
      source,
      formats: ['raw'],
      buildArgNames: [],
      bases: [{ name: 'debian:bookworm', id: `sha256:${'b'.repeat(64)}` }],
      sdkVersion: 'x',
      settings: { buildNetwork: 'filtered', memoryMb: 1, cpus: 1, buildTimeoutSeconds: 1, maxImageMb: 1 },
      startedOn: '2026-01-01T00:00:00Z',
      finishedOn: '2026-01-01T00:00:01Z',
      env: {},
    }) as {
      predicate: { buildDefinition: { externalParameters: Record<string, unknown>; resolvedDependencies: unknown[] } };
    };
    const def = p.predicate.buildDefinition;
    expect(def.externalParameters.source).toEqual({
      uri: 'git+https://git.example.com/team/images.git@main',
      dockerfilePath: 'Dockerfile',
      contextDir: '',
    });
    expect(def.resolvedDependencies[0]).toEqual({
      uri: 'git+https://git.example.com/team/images.git@main',
      digest: { gitCommit: 'a'.repeat(40) },
      annotations: { dockerfilePath: 'Dockerfile', contextDir: '' },
    });
    expect(def.resolvedDependencies).toHaveLength(2);
  });

  it('two commits with the same files are two build inputs; a version without a source keeps its old digest', () => {
    const df = 'FROM debian:bookworm\n';
    expect(specSha256(df, null, source)).not.toBe(specSha256(df, null, { ...source, commit: 'b'.repeat(40) }));
    expect(specSha256(df, null)).toBe(createHash('sha256').update(df).digest('hex'));
  });
});
