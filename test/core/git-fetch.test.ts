/**
 * The git fetcher (src/core/git/fetch.ts) against real servers on loopback: git daemon and git http-backend behind
 * https. Loopback is a refused range, so every test that fetches allows the one host it uses (git.allowHosts), and
 * one shows the refusal without the allow.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { branchHead, fetchSource, type GitDeps } from '../../src/core/git/fetch.js';
import { parseGitUrl } from '../../src/core/git/url.js';
import { silentLogger } from '../../src/shared/logger.js';
import { startGitServers, type GitServers, type Repo } from '../helpers/git-server.js';
import { tempDir } from '../helpers/tmp.js';

const DOCKERFILE = 'FROM debian:bookworm\nCOPY app /app\n';

describe('fetching a Dockerfile and its context from git', () => {
  let servers: GitServers;
  let repo: Repo;
  let tmp: ReturnType<typeof tempDir>;
  const deps = (git: Record<string, unknown> = {}, lookup?: GitDeps['lookup']): GitDeps => ({
    config: loadConfig(
      {},
      { dataDir: tmp.dir, git: { allowHosts: ['127.0.0.1'], caFile: servers.caFile, timeoutSeconds: 60, ...git } },
    ),
    logger: silentLogger,
    ...(lookup ? { lookup } : {}),
  });
  const leftovers = () => readdirSync(path.join(tmp.dir, 'tmp', 'git'));
  let first: string;
  let tagged: string;
  let second: string;

  beforeAll(async () => {
    servers = await startGitServers();
    tmp = tempDir('kiln-git-fetch-');
    repo = servers.repo('images');
    first = repo.commit({ Dockerfile: DOCKERFILE, 'app/main.sh': 'echo one\n', 'README.md': 'hi\n' });
    tagged = repo.tag('v1');
    second = repo.commit({ 'app/main.sh': 'echo two\n' });
  }, 60_000);
  afterAll(async () => {
    await servers.close();
    tmp.cleanup();
  });

  it('by branch, by tag and by commit over git://, and by branch over https through git http-backend', async () => {
    const d = deps();
    const url = parseGitUrl(repo.gitUrl);
    const byBranch = await fetchSource(d, { url, ref: 'main', path: 'Dockerfile', context: '' });
    expect(byBranch.commit).toBe(second);
    expect(byBranch.dockerfile).toBe(DOCKERFILE);
    expect(byBranch.context!.listing.map((e) => e.name)).toEqual(['Dockerfile', 'README.md', 'app', 'app/main.sh']);
    expect(byBranch.source).toEqual({
      type: 'git',
      url: repo.gitUrl,
      ref: 'main',
      commit: second,
      path: 'Dockerfile',
      context: '',
    });
    const byTag = await fetchSource(d, { url, ref: 'v1', path: 'Dockerfile', context: 'app' });
    expect(byTag.commit).toBe(tagged);
    expect(byTag.commit).toBe(first);
    expect(byTag.context!.listing).toEqual([{ name: 'main.sh', type: 'file', size: 9 }]);
    const byCommit = await fetchSource(d, { url, ref: first, path: 'Dockerfile', context: 'app' });
    expect(byCommit.commit).toBe(first);
    // The same commit makes the same context, byte for byte (the commit's time, not the fetch's, on every entry).
    expect(byCommit.context!.sha256).toBe(byTag.context!.sha256);
    const overHttps = await fetchSource(d, {
      url: parseGitUrl(repo.httpsUrl()),
      ref: 'main',
      path: 'Dockerfile',
      context: 'app',
    });
    expect(overHttps.commit).toBe(second);
    expect(await branchHead(d, parseGitUrl(repo.httpsUrl()), 'main')).toBe(second);
    expect(await branchHead(d, url, 'nope')).toBeUndefined();
    expect(leftovers()).toEqual([]);
  });

  it('case 39: loopback is refused unless an admin allows the host; private and link-local addresses too, before anything connects', async () => {
    const url = parseGitUrl(repo.gitUrl);
    await expect(
      fetchSource(deps({ allowHosts: [] }), { url, ref: 'main', path: 'Dockerfile', context: '' }),
    ).rejects.toMatchObject({
      code: 'forbidden',
      message: expect.stringMatching(/127\.0\.0\.1.*KILN_GIT_ALLOW_HOSTS/),
    });
    // Names that resolve inside: the metadata address, a private one, and a name with a public and a private address.
    const names: Record<string, string[]> = {
      'metadata.test': ['169.254.169.254'],
      'lan.test': ['10.0.0.5'],
      'mixed.test': ['93.184.216.34', '192.168.1.10'],
      'v6.test': ['::1'],
      'mapped.test': ['::ffff:127.0.0.1'],
    };
    const d = deps({ allowHosts: [] }, async (h) => names[h] ?? []);
    for (const host of Object.keys(names)) {
      await expect(
        fetchSource(d, {
          url: parseGitUrl(`https://${host}/x.git`),
          ref: 'main',
          path: 'Dockerfile',
          context: '',
        }),
        host,
      ).rejects.toMatchObject({ code: 'forbidden' });
    }
    // Allowed by prefix: the address is inside it.
    const byPrefix = await fetchSource(deps({ allowHosts: ['127.0.0.0/8'] }), {
      url,
      ref: 'main',
      path: 'Dockerfile',
      context: '',
    });
    expect(byPrefix.commit).toBe(second);
    expect(leftovers()).toEqual([]);
  });

  it('git connects to the address Kiln checked, not to one it resolves itself (a name only Kiln can resolve works over https and git://)', async () => {
    // repo.test resolves nowhere but in this lookup: git can only reach it through the pinned address.
    const d = deps({ allowHosts: ['repo.test'] }, async (h) => (h === 'repo.test' ? ['127.0.0.1'] : []));
    const before = servers.httpsRequests.length;
    const https = await fetchSource(d, {
      url: parseGitUrl(repo.httpsUrl('repo.test')),
      ref: 'main',
      path: 'Dockerfile',
      context: '',
    });
    expect(https.commit).toBe(second);
    // TLS and the Host header still name the host (the certificate is checked against it).
    expect(servers.httpsRequests.slice(before).every((r) => r.host === `repo.test:${servers.httpsPort}`)).toBe(true);
    const gitProto = await fetchSource(d, {
      url: parseGitUrl(`git://repo.test:${servers.daemonPort}/images.git`),
      ref: 'main',
      path: 'Dockerfile',
      context: '',
    });
    expect(gitProto.commit).toBe(second);
    // The source keeps the name the user gave, not the address.
    expect(gitProto.source.url).toBe(`git://repo.test:${servers.daemonPort}/images.git`);
  });

  it('a pack larger than git.maxFetchMb is stopped and its directory removed; a context larger than 16 MiB is refused before it is read', async () => {
    const big = servers.repo('big');
    big.commit({ Dockerfile: DOCKERFILE, 'blob.bin': randomBytes(3 * 1024 * 1024) });
    const url = parseGitUrl(big.gitUrl);
    await expect(
      fetchSource(deps({ maxFetchMb: 1 }), { url, ref: 'main', path: 'Dockerfile', context: '' }),
    ).rejects.toMatchObject({ code: 'too_large', message: expect.stringContaining('1 MiB') });
    expect(leftovers()).toEqual([]);
    const huge = servers.repo('huge');
    huge.commit({
      Dockerfile: DOCKERFILE,
      'a.bin': randomBytes(9 * 1024 * 1024),
      'b.bin': randomBytes(9 * 1024 * 1024),
    });
    await expect(
      fetchSource(deps(), { url: parseGitUrl(huge.gitUrl), ref: 'main', path: 'Dockerfile', context: '' }),
    ).rejects.toMatchObject({ code: 'too_large', message: expect.stringContaining('16 MiB') });
    expect(leftovers()).toEqual([]);
  });

  it('case 22: a symlink in the repository stays a symlink in the context (nothing of this host is read); the Dockerfile must be a regular file', async () => {
    const links = servers.repo('links');
    links.commit({
      Dockerfile: DOCKERFILE,
      leak: { symlink: '/etc/hostname' },
      etc: { symlink: '/etc' },
      'df-link': { symlink: 'Dockerfile' },
    });
    const d = deps();
    const url = parseGitUrl(links.gitUrl);
    const f = await fetchSource(d, { url, ref: 'main', path: 'Dockerfile', context: '' });
    expect(f.context!.listing).toEqual(
      expect.arrayContaining([
        { name: 'leak', type: 'symlink', size: 0, linkname: '/etc/hostname' },
        { name: 'etc', type: 'symlink', size: 0, linkname: '/etc' },
      ]),
    );
    await expect(fetchSource(d, { url, ref: 'main', path: 'df-link', context: '' })).rejects.toMatchObject({
      code: 'invalid_input',
      message: expect.stringContaining('not a regular file'),
    });
    // A context directory that is a symlink to a host directory is no directory of the repository.
    await expect(fetchSource(d, { url, ref: 'main', path: 'Dockerfile', context: 'etc' })).rejects.toMatchObject({
      code: 'not_found',
    });
  });

  it('no hook, filter or submodule of the repository runs; submodules are fetched only when enabled, each URL checked (a local path is refused)', async () => {
    const lib = servers.repo('lib');
    const libHead = lib.commit({ 'lib.txt': 'library\n' });
    const sup = servers.repo('super');
    // A submodule whose URL is a local path on the server, one served over git://, and filters and attributes that
    // would run commands if a checkout honoured them.
    sup.commit({ Dockerfile: DOCKERFILE, '.gitattributes': '* filter=evil diff=evil\n', 'x.txt': 'x\n' });
    const gitmodules = `[submodule "local"]\n\tpath = local\n\turl = ${lib.bare}\n[submodule "served"]\n\tpath = served\n\turl = ${lib.gitUrl}\n`;
    writeFileSync(path.join(sup.work, '.gitmodules'), gitmodules);
    // Uninitialised submodules are empty directories in a work tree.
    for (const p of ['local', 'served']) mkdirSync(path.join(sup.work, p));
    const { execFileSync } = await import('node:child_process');
    const env = {
      ...process.env,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_AUTHOR_NAME: 't',
      GIT_AUTHOR_EMAIL: 't@t',
      GIT_COMMITTER_NAME: 't',
      GIT_COMMITTER_EMAIL: 't@t',
    };
    for (const p of ['local', 'served'])
      execFileSync('git', ['update-index', '--add', '--cacheinfo', `160000,${libHead},${p}`], { cwd: sup.work, env });
    execFileSync('git', ['add', '.gitmodules'], { cwd: sup.work, env });
    execFileSync('git', ['commit', '-q', '-m', 'submodules'], { cwd: sup.work, env });
    execFileSync('git', ['push', '-q', sup.bare, 'HEAD:refs/heads/main'], { cwd: sup.work, env });
    // What a hostile environment would make git run: hook templates, a global config with the filter's command.
    const trap = tempDir('kiln-git-trap-');
    const marker = path.join(trap.dir, 'ran');
    const hooks = path.join(trap.dir, 'templates', 'hooks');
    mkdirSync(hooks, { recursive: true });
    for (const h of ['reference-transaction', 'post-checkout', 'post-merge', 'fsmonitor-watchman']) {
      writeFileSync(path.join(hooks, h), `#!/bin/sh\necho ${h} >> '${marker}'\n`);
      chmodSync(path.join(hooks, h), 0o755);
    }
    const smudge = path.join(trap.dir, 'smudge.sh');
    writeFileSync(smudge, `#!/bin/sh\necho smudge >> '${marker}'\ncat\n`);
    chmodSync(smudge, 0o755);
    const global = path.join(trap.dir, 'gitconfig');
    writeFileSync(
      global,
      `[filter "evil"]\n\tsmudge = ${smudge}\n\tclean = cat\n[core]\n\thooksPath = ${hooks}\n\tfsmonitor = ${path.join(hooks, 'fsmonitor-watchman')}\n[init]\n\ttemplateDir = ${path.dirname(hooks)}\n`,
    );
    const saved = { ...process.env };
    Object.assign(process.env, { GIT_TEMPLATE_DIR: path.dirname(hooks), GIT_CONFIG_GLOBAL: global, HOME: trap.dir });
    try {
      const url = parseGitUrl(sup.gitUrl);
      const off = await fetchSource(deps(), { url, ref: 'main', path: 'Dockerfile', context: '' });
      const names = off.context!.listing.map((e) => `${e.name}:${e.type}`);
      expect(names).toEqual(expect.arrayContaining(['local:directory', 'served:directory', 'x.txt:file']));
      expect(names.some((n) => n.startsWith('served/') || n.startsWith('local/'))).toBe(false);
      const on = deps({ submodules: true });
      await expect(fetchSource(on, { url, ref: 'main', path: 'Dockerfile', context: '' })).rejects.toMatchObject({
        code: 'invalid_input',
        message: expect.stringMatching(/^Submodule local: .*file:\/\//),
      });
      // Only the served one inside the context: it is fetched at the recorded commit and put at its path.
      sup.commit({ '.gitmodules': `[submodule "served"]\n\tpath = served\n\turl = ${lib.gitUrl}\n`, local: null });
      const withSub = await fetchSource(on, { url, ref: 'main', path: 'Dockerfile', context: '' });
      expect(withSub.context!.listing).toEqual(
        expect.arrayContaining([{ name: 'served/lib.txt', type: 'file', size: 8 }]),
      );
      expect(existsSync(marker)).toBe(false);
    } finally {
      process.env = saved;
      trap.cleanup();
    }
  });

  it('file:// reads only inside an admin mirror directory (after symlinks); ssh URLs need the admin known_hosts', async () => {
    const mirror = servers.root;
    const d = deps({ mirrors: [mirror] });
    const f = await fetchSource(d, {
      url: parseGitUrl(`file://${repo.bare}`, [mirror]),
      ref: 'main',
      path: 'Dockerfile',
      context: '',
    });
    expect(f.commit).toBe(second);
    // A symlink inside the mirror that leads out of it is not inside it.
    const outside = servers.repo('outside-target');
    outside.commit({ Dockerfile: DOCKERFILE });
    const sneaky = tempDir('kiln-git-mirror-');
    try {
      const { symlinkSync } = await import('node:fs');
      symlinkSync(outside.bare, path.join(sneaky.dir, 'link.git'));
      // `..` is gone once the URL is parsed: what is left names a place outside the mirror.
      expect(() => parseGitUrl(`file://${sneaky.dir}/mirror/../link.git`, [path.join(sneaky.dir, 'mirror')])).toThrow(
        /only inside the local mirror/,
      );
      mkdirSync(path.join(sneaky.dir, 'mirror'));
      symlinkSync(outside.bare, path.join(sneaky.dir, 'mirror', 'link.git'));
      await expect(
        fetchSource(deps({ mirrors: [path.join(sneaky.dir, 'mirror')] }), {
          url: parseGitUrl(`file://${sneaky.dir}/mirror/link.git`, [path.join(sneaky.dir, 'mirror')]),
          ref: 'main',
          path: 'Dockerfile',
          context: '',
        }),
      ).rejects.toMatchObject({ code: 'forbidden' });
    } finally {
      sneaky.cleanup();
    }
    await expect(
      fetchSource(deps({ allowHosts: ['127.0.0.1'] }), {
        url: parseGitUrl('ssh://git@127.0.0.1/team/images.git'),
        ref: 'main',
        path: 'Dockerfile',
        context: '',
      }),
    ).rejects.toMatchObject({ code: 'forbidden', message: expect.stringContaining('KILN_GIT_SSH_KNOWN_HOSTS_FILE') });
    expect(leftovers()).toEqual([]);
  });

  it('a ref or path that is not there is a clear not_found; the temp dir goes whatever happens', async () => {
    const d = deps();
    const url = parseGitUrl(repo.gitUrl);
    await expect(fetchSource(d, { url, ref: 'no-such-branch', path: 'Dockerfile', context: '' })).rejects.toMatchObject(
      { code: 'not_found' },
    );
    await expect(fetchSource(d, { url, ref: 'main', path: 'nope/Dockerfile', context: '' })).rejects.toMatchObject({
      code: 'not_found',
    });
    await expect(fetchSource(d, { url, ref: 'main', path: 'Dockerfile', context: 'nope' })).rejects.toMatchObject({
      code: 'not_found',
    });
    expect(leftovers()).toEqual([]);
  });
});
