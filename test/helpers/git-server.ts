/**
 * Real git servers on loopback for the git-source tests: `git daemon` (git://) and `git http-backend` run as CGI
 * behind a small Node https server (https://, with a self-signed certificate for localhost, repo.test and
 * 127.0.0.1 whose PEM the tests give Kiln as git.caFile). Repositories are bare repos under one root, filled from a
 * work tree with real `git push`es; the https door accepts pushes (http.receivepack), and a repository can be given
 * a post-receive hook that delivers the push to a webhook signed as GitHub, Gitea or GitLab would.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, writeFileSync, chmodSync, readFileSync, existsSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { tempDir } from './tmp.js';
import { selfSignedCert } from './tls.js';
import { until } from './wait.js';

const GIT_CORE = '/usr/lib/git-core';
const execFileAsync = promisify(execFile);

export type Forge = 'github' | 'gitea' | 'gitlab';

export interface Repo {
  name: string;
  /** The bare repository served (root/<name>.git). */
  bare: string;
  /** The work tree commits are made in and pushed from. */
  work: string;
  gitUrl: string;
  httpsUrl(host?: string): string;
  /** Writes files (string: content; {symlink}: a link; null: removal), commits, pushes to the bare repo; returns the commit. */
  commit(files: Record<string, string | Buffer | { symlink: string } | null>, message?: string): string;
  /** Like commit, but pushed over https through git http-backend (what fires the post-receive webhook). */
  commitAndPushHttps(files: Record<string, string | { symlink: string } | null>): Promise<string>;
  head(): string;
  tag(name: string, annotated?: boolean): string;
  /** Delivers each push to `url` as `forge` would, signed with `secret`; answers are appended to hook.log. */
  deliverPushesTo(url: string, forge: Forge, secret: string): void;
  /** Delivers one push again, as a forge's "redeliver" does (same push, a new delivery id). */
  redeliver(before: string, after: string, ref?: string): Promise<void>;
  /** The status lines the post-receive hook got from the webhook (`<status> <body>`), oldest first. */
  hookLog(): string[];
}

export interface GitServers {
  root: string;
  daemonPort: number;
  httpsPort: number;
  /** The server certificate (self-signed), as git.caFile. */
  caFile: string;
  /** Requests the https server answered, with the Host header and path (the pinning test reads them). */
  httpsRequests: Array<{ host: string; path: string }>;
  repo(name: string): Repo;
  close(): Promise<void>;
}

const gitEnv = {
  PATH: '/usr/bin:/bin',
  HOME: '/nonexistent',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.invalid',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.invalid',
};

function git(cwd: string, args: string[], env: Record<string, string> = {}): string {
  return execFileSync('git', args, {
    cwd,
    env: { ...gitEnv, ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** The hook a served repository runs after a push: builds the forge's payload and posts it, signed. */
const HOOK_SCRIPT = `
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync, appendFileSync } from 'node:fs';
const cfg = JSON.parse(readFileSync(process.env.KILN_HOOK_CONFIG, 'utf8'));
const lines = readFileSync(0, 'utf8').trim().split('\\n').filter(Boolean);
for (const line of lines) {
  const [before, after, ref] = line.split(' ');
  const repo = cfg.repository;
  let body, headers = { 'content-type': 'application/json' };
  const commit = { id: after, message: 'change', timestamp: new Date().toISOString(), url: repo.html_url + '/commit/' + after,
    author: { name: 'Test', email: 'test@example.invalid', username: 'test' }, committer: { name: 'Test', email: 'test@example.invalid', username: 'test' },
    added: [], removed: [], modified: ['Dockerfile'] };
  if (cfg.forge === 'gitlab') {
    body = JSON.stringify({ object_kind: 'push', event_name: 'push', before, after, ref, ref_protected: true, checkout_sha: after,
      user_id: 4, user_name: 'Test', user_username: 'test', user_email: '', user_avatar: null, project_id: 15,
      project: { id: 15, name: repo.name, description: '', web_url: repo.html_url, avatar_url: null, git_ssh_url: repo.ssh_url,
        git_http_url: repo.clone_url, namespace: 'team', visibility_level: 20, path_with_namespace: 'team/' + repo.name,
        default_branch: 'main', homepage: repo.html_url, url: repo.ssh_url, ssh_url: repo.ssh_url, http_url: repo.clone_url },
      commits: [commit], total_commits_count: 1,
      repository: { name: repo.name, url: repo.ssh_url, description: '', homepage: repo.html_url, git_http_url: repo.clone_url,
        git_ssh_url: repo.ssh_url, visibility_level: 20 } });
    headers = { ...headers, 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': cfg.secret, 'x-gitlab-instance': 'https://gitlab.example',
      'x-gitlab-webhook-uuid': randomUUID(), 'x-gitlab-event-uuid': randomUUID() };
  } else {
    const repository = { id: 140, name: repo.name, full_name: 'team/' + repo.name, private: false, fork: false,
      owner: { id: 1, login: 'team', username: 'team' }, html_url: repo.html_url, url: repo.html_url, ssh_url: repo.ssh_url,
      clone_url: repo.clone_url, default_branch: 'main' };
    if (cfg.forge === 'github') Object.assign(repository, { git_url: repo.git_url, node_id: 'R_kgDO' });
    body = JSON.stringify({ ref, before, after, created: /^0+$/.test(before), deleted: /^0+$/.test(after), forced: false,
      base_ref: null, compare: repo.html_url + '/compare/' + before + '...' + after, compare_url: repo.html_url + '/compare/' + before + '...' + after,
      commits: [commit], total_commits: 1, head_commit: commit, repository, pusher: { name: 'test', email: '' }, sender: { login: 'test', id: 1 } });
    const hex = createHmac('sha256', cfg.secret).update(body).digest('hex');
    const id = randomUUID();
    headers = cfg.forge === 'github'
      ? { ...headers, 'x-github-event': 'push', 'x-github-delivery': id, 'x-hub-signature-256': 'sha256=' + hex,
          'user-agent': 'GitHub-Hookshot/test' }
      : { ...headers, 'x-github-event': 'push', 'x-github-delivery': id, 'x-gogs-event': 'push', 'x-gogs-delivery': id,
          'x-gitea-event': 'push', 'x-gitea-delivery': id, 'x-gitea-signature': hex };
  }
  const res = await fetch(cfg.url, { method: 'POST', headers, body });
  appendFileSync(cfg.log, res.status + ' ' + (await res.text()).replace(/\\n/g, ' ') + '\\n');
}
`;

/** A self-signed certificate for the names the tests use. */
function certificate(dir: string): { key: string; cert: string; file: string } {
  const key = path.join(dir, 'key.pem');
  const file = path.join(dir, 'cert.pem');
  selfSignedCert({
    keyFile: key,
    certFile: file,
    subject: '/CN=localhost',
    altNames: 'DNS:localhost,DNS:repo.test,IP:127.0.0.1',
  });
  return { key: readFileSync(key, 'utf8'), cert: readFileSync(file, 'utf8'), file };
}

/** git http-backend as CGI: the request in its environment and stdin, its stdout parsed back into an answer. */
function cgi(root: string): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const url = new URL(req.url ?? '/', 'https://x');
    const child = spawn(path.join(GIT_CORE, 'git-http-backend'), [], {
      env: {
        ...gitEnv,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        ...(req.headers['content-length'] ? { CONTENT_LENGTH: req.headers['content-length'] } : {}),
        ...(req.headers['content-encoding'] ? { HTTP_CONTENT_ENCODING: req.headers['content-encoding'] } : {}),
        ...(typeof req.headers['git-protocol'] === 'string' ? { GIT_PROTOCOL: req.headers['git-protocol'] } : {}),
        REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
        REMOTE_USER: 'test',
        KILN_HOOK_CONFIG: path.join(root, `${decodeURIComponent(url.pathname).split('/')[1]}`, 'kiln-hook.json'),
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    req.pipe(child.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const i = line.indexOf(':');
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
        else res.setHeader(k, v);
      }
      res.statusCode = status;
      res.write(head.subarray(end + 4));
    });
    child.on('close', () => res.end());
  };
}

export async function startGitServers(): Promise<GitServers> {
  const tmp = tempDir('kiln-git-servers-');
  const root = path.join(tmp.dir, 'repos');
  mkdirSync(root);
  const { key, cert, file: caFile } = certificate(tmp.dir);
  const httpsRequests: GitServers['httpsRequests'] = [];
  const handler = cgi(root);
  const server = https.createServer({ key, cert }, (req, res) => {
    httpsRequests.push({ host: String(req.headers.host ?? ''), path: req.url ?? '' });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const httpsPort = (server.address() as net.AddressInfo).port;
  const daemonPort = await freePort();
  const daemon: ChildProcess = spawn(
    path.join(GIT_CORE, 'git-daemon'),
    [
      '--reuseaddr',
      '--listen=127.0.0.1',
      `--port=${daemonPort}`,
      `--base-path=${root}`,
      '--export-all',
      '--informative-errors',
      root,
    ],
    { env: gitEnv, stdio: 'ignore' },
  );
  const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
  await until(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(daemonPort, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
    30_000,
    50,
  );
  const hookScript = path.join(tmp.dir, 'fire-webhook.mjs');
  writeFileSync(hookScript, HOOK_SCRIPT);

  const repo = (name: string): Repo => {
    const bare = path.join(root, `${name}.git`);
    const work = path.join(tmp.dir, 'work', name);
    if (!existsSync(bare)) {
      mkdirSync(bare, { recursive: true });
      git(bare, ['init', '--quiet', '--bare', '-b', 'main', '--template=']);
      git(bare, ['config', 'http.receivepack', 'true']);
      mkdirSync(work, { recursive: true });
      git(work, ['init', '--quiet', '-b', 'main']);
    }
    const httpsUrl = (host = '127.0.0.1') => `https://${host}:${httpsPort}/${name}.git`;
    const write = (files: Record<string, string | Buffer | { symlink: string } | null>) => {
      for (const [p, v] of Object.entries(files)) {
        const f = path.join(work, p);
        execFileSync('rm', ['-rf', f]);
        if (v === null) continue;
        mkdirSync(path.dirname(f), { recursive: true });
        if (typeof v === 'object' && !Buffer.isBuffer(v)) execFileSync('ln', ['-s', v.symlink, f]);
        else writeFileSync(f, v);
      }
      git(work, ['add', '-A']);
      git(work, ['commit', '--quiet', '--allow-empty', '-m', 'change']);
    };
    const r: Repo = {
      name,
      bare,
      work,
      gitUrl: `git://127.0.0.1:${daemonPort}/${name}.git`,
      httpsUrl,
      commit(files, message = 'change') {
        void message;
        write(files);
        git(work, ['push', '--quiet', bare, 'HEAD:refs/heads/main']);
        return r.head();
      },
      // Asynchronous: the https server (and the web the hook calls) answer in this very process.
      async commitAndPushHttps(files) {
        write(files);
        await execFileAsync(
          'git',
          ['-c', `http.sslCAInfo=${caFile}`, 'push', '--quiet', httpsUrl(), 'HEAD:refs/heads/main'],
          { cwd: work, env: { ...gitEnv, GIT_TERMINAL_PROMPT: '0' } },
        );
        return r.head();
      },
      head: () => git(bare, ['rev-parse', 'refs/heads/main']),
      tag(tagName, annotated = true) {
        git(work, ['tag', ...(annotated ? ['-a', '-m', tagName] : []), tagName]);
        git(work, ['push', '--quiet', bare, `refs/tags/${tagName}`]);
        return git(bare, ['rev-parse', `refs/tags/${tagName}^{commit}`]);
      },
      deliverPushesTo(url, forge, secret) {
        const log = path.join(bare, 'hook.log');
        writeFileSync(
          path.join(bare, 'kiln-hook.json'),
          JSON.stringify({
            url,
            forge,
            secret,
            log,
            repository: {
              name,
              html_url: `https://127.0.0.1:${httpsPort}/${name}`,
              clone_url: httpsUrl(),
              ssh_url: `git@127.0.0.1:${name}.git`,
              git_url: `git://127.0.0.1/${name}.git`,
            },
          }),
        );
        mkdirSync(path.join(bare, 'hooks'), { recursive: true });
        const hook = path.join(bare, 'hooks', 'post-receive');
        writeFileSync(hook, `#!/bin/sh\nexec '${process.execPath}' '${hookScript}'\n`);
        chmodSync(hook, 0o755);
      },
      async redeliver(before, after, ref = 'refs/heads/main') {
        const child = execFile(process.execPath, [hookScript], {
          env: { ...gitEnv, KILN_HOOK_CONFIG: path.join(bare, 'kiln-hook.json') },
        });
        const done = new Promise<void>((resolve, reject) =>
          child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`hook exited ${code}`)))),
        );
        child.stdin!.end(`${before} ${after} ${ref}\n`);
        await done;
      },
      hookLog: () => {
        const f = path.join(bare, 'hook.log');
        return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : [];
      },
    };
    return r;
  };

  return {
    root,
    daemonPort,
    httpsPort,
    caFile,
    httpsRequests,
    repo,
    async close() {
      if (daemon.exitCode === null) {
        daemon.kill('SIGTERM');
        await exited;
      }
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      tmp.cleanup();
    },
  };
}
