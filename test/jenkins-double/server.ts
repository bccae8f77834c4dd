import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import { ConfigError, serialiseConfig } from './config-xml.js';
import type { Build, Cause, Engine, Job, Param, QueueItem } from './engine.js';

/**
 * The HTTP face of the double: Jenkins' REST API as JENKINS-REST.md describes it, for everything node-jenkins calls
 * (§1, §3) plus artifact download. Section numbers in comments point into that document.
 */

/** `admin`: the user has Overall/Administer (matrix auth); everyone else has the job permissions only. */
export interface DoubleUser {
  name: string;
  password?: string;
  token?: string;
  admin?: boolean;
}

/** The Jenkins version the double reports in X-Jenkins unless told another (the latest LTS in JENKINS-REST.md §0). */
export const DEFAULT_VERSION = '2.568.2';
const JSON_TYPE = 'application/json;charset=UTF-8';

type Auth = { user: string; viaToken: boolean };
type Tree = Map<string, { sub: Tree | null; range: [number, number] | null }>;

/** `?tree=a,b[c,d]{0,5}` (§2.6). */
function parseTree(spec: string): Tree {
  let i = 0;
  const parseList = (): Tree => {
    const t: Tree = new Map();
    for (;;) {
      let name = '';
      while (i < spec.length && /[A-Za-z0-9_$]/.test(spec[i]!)) name += spec[i++];
      let sub: Tree | null = null;
      let range: [number, number] | null = null;
      if (spec[i] === '[') {
        i++;
        sub = parseList();
        if (spec[i] === ']') i++;
      }
      if (spec[i] === '{') {
        const end = spec.indexOf('}', i);
        const [a, b] = spec.slice(i + 1, end).split(',');
        range = [Number(a || 0), b === undefined ? Number(a) + 1 : b === '' ? Infinity : Number(b)];
        i = end + 1;
      }
      if (name) t.set(name, { sub, range });
      if (spec[i] === ',') {
        i++;
        continue;
      }
      return t;
    }
  };
  return parseList();
}

function prune(v: unknown, tree: Tree): unknown {
  if (Array.isArray(v)) return v.map((x) => prune(x, tree));
  if (!v || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  if ('_class' in o) out._class = o._class;
  for (const [k, { sub, range }] of tree) {
    if (!(k in o)) continue;
    let val = o[k];
    if (Array.isArray(val) && range) val = val.slice(range[0], range[1]);
    out[k] = sub ? prune(val, sub) : val;
  }
  return out;
}

export class DoubleServer {
  readonly server: http.Server;
  private sessions = new Map<string, string>(); // session id -> user
  private readonly cookieName = `JSESSIONID.${randomBytes(4).toString('hex')}`;
  private readonly sessionHash = randomBytes(8).toString('hex');
  requests = 0;
  /** Method and path of the latest requests (at most 1,000), for tests that check which endpoint was called. */
  readonly log: string[] = [];

  /**
   * Test hook, awaited after createItem has made the job and before the answer is sent: the moment to cut off a
   * client that asked (case 46: the glue killed between Jenkins' create and its reply).
   */
  afterCreateItem?: (name: string) => Promise<void> | void;

  constructor(
    private engine: Engine,
    private users: DoubleUser[],
    private readonly version = DEFAULT_VERSION,
  ) {
    this.server = http.createServer((req, res) => {
      this.requests++;
      this.log.push(`${req.method} ${(req.url ?? '').split('?')[0]}`);
      if (this.log.length > 1000) this.log.shift();
      this.handle(req, res).catch((e: unknown) => {
        if (!res.headersSent) this.html(res, 500, `<h1>Oops!</h1><pre>${String(e)}</pre>`);
        else res.destroy();
      });
    });
  }

  // ----------------------------------------------------------------------------------------------- helpers
  private base(req: IncomingMessage) {
    return `http://${req.headers.host ?? '127.0.0.1'}/`;
  }

  private html(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) {
    res.writeHead(status, { 'Content-Type': 'text/html;charset=utf-8', ...headers });
    res.end(`<html><body>${body}</body></html>`);
  }

  /** §2.5: api/json responses carry the version headers and the Stapler JSON content type. */
  private json(req: IncomingMessage, res: ServerResponse, body: unknown, url: URL) {
    const tree = url.searchParams.get('tree');
    const out = tree ? prune(body, parseTree(tree)) : body;
    res.writeHead(200, {
      'Content-Type': JSON_TYPE,
      'X-Jenkins': this.version,
      'X-Jenkins-Session': this.sessionHash,
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'deny',
    });
    res.end(req.method === 'HEAD' ? undefined : JSON.stringify(out));
  }

  /** §2.4: a Failure is 400 + X-Error; curly quotes are not ISO-8859-1, so they reach the client as "?". */
  private failure(res: ServerResponse, message: string) {
    this.html(res, 400, `<h1>Error</h1><p>${message.replace(/[<&]/g, (c) => (c === '<' ? '&lt;' : '&amp;'))}</p>`, {
      'X-Error': message.replace(/[^\x20-\x7e]/g, '?'),
    });
  }

  private notFound(res: ServerResponse) {
    this.html(res, 404, '<h1>Not Found</h1>');
  }

  /** §2.3: @RequirePOST endpoints answer GET with 405 + Allow: POST. */
  private requirePost(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method === 'POST') return true;
    this.html(res, 405, '<p>This URL requires POST. Try again?</p>', { Allow: 'POST' });
    return false;
  }

  private redirect(res: ServerResponse, location: string, status = 302) {
    res.writeHead(status, { Location: location, 'Content-Length': '0' });
    res.end();
  }

  private async body(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let len = 0;
    for await (const c of req) {
      len += (c as Buffer).length;
      if (len > 64 * 1024 * 1024) throw new Error('request body too large');
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }

  private form(req: IncomingMessage, body: Buffer, url: URL): URLSearchParams {
    const p = new URLSearchParams(url.search);
    if ((req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      for (const [k, v] of new URLSearchParams(body.toString('utf8'))) p.append(k, v);
    }
    return p;
  }

  // -------------------------------------------------------------------------------------------------- auth
  /** §2.1: bad credentials 401 with the Basic challenge; anonymous 403 (anonymous has no Overall/Read here). */
  private authenticate(req: IncomingMessage, res: ServerResponse): Auth | null {
    const h = req.headers.authorization;
    if (!h) {
      this.html(res, 403, 'Authentication required', {
        'X-You-Are-Authenticated-As': 'anonymous',
        'X-Required-Permission': 'hudson.model.Hudson.Read',
        'X-Hudson': '1.395',
        'X-Jenkins': this.version,
        'X-Jenkins-Session': this.sessionHash,
      });
      return null;
    }
    const m = /^Basic\s+(.+)$/i.exec(h);
    const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
    const at = decoded.indexOf(':');
    const name = at < 0 ? decoded : decoded.slice(0, at);
    const secret = at < 0 ? '' : decoded.slice(at + 1);
    const eq = (a: string | undefined) =>
      a !== undefined && a.length === secret.length && timingSafeEqual(Buffer.from(a), Buffer.from(secret));
    const user = this.users.find((u) => u.name === name);
    if (user && eq(user.token)) return { user: name, viaToken: true };
    if (user && eq(user.password)) return { user: name, viaToken: false };
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="Jenkins"', 'Content-Type': 'text/html;charset=utf-8' });
    res.end(`<html><body>Invalid password/token for user: ${name.replace(/[<&]/g, '')}</body></html>`);
    return null;
  }

  private sessionOf(req: IncomingMessage): string | undefined {
    const cookie = req.headers.cookie ?? '';
    for (const part of cookie.split(/;\s*/)) {
      const [k, v] = part.split('=');
      if (k === this.cookieName && v && this.sessions.has(v)) return v;
    }
    return undefined;
  }

  private crumbFor(user: string, session: string) {
    return createHash('sha256').update(`${user};${session}${this.engine.crumbSalt}`).digest('hex');
  }

  /** §2.2: every POST needs a crumb bound to the session, unless the Basic credentials were an API token. */
  private checkCrumb(req: IncomingMessage, res: ServerResponse, auth: Auth, form: URLSearchParams | null): boolean {
    if (req.method !== 'POST' || auth.viaToken) return true;
    const session = this.sessionOf(req);
    const sent = (req.headers['jenkins-crumb'] as string | undefined) ?? form?.get('Jenkins-Crumb') ?? undefined;
    if (session && sent && this.sessions.get(session) === auth.user && sent === this.crumbFor(auth.user, session))
      return true;
    this.html(res, 403, 'No valid crumb was included in the request');
    return false;
  }

  // ------------------------------------------------------------------------------------------------ routes
  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://double/');
    this.engine.baseUrl = this.base(req);
    // WhoAmI is an UnprotectedRootAction (J hudson/security/WhoAmI.java): it answers anonymous requests too; bad
    // credentials are still refused first (§2.1).
    if (url.pathname.replace(/\/+$/, '') === '/whoAmI/api/json' && !req.headers.authorization)
      return this.json(req, res, this.whoAmI(null), url);
    const auth = this.authenticate(req, res);
    if (!auth) return;
    const body = req.method === 'POST' ? await this.body(req) : Buffer.alloc(0);
    const form = req.method === 'POST' ? this.form(req, body, url) : null;
    if (!this.checkCrumb(req, res, auth, form)) return;

    const segs = url.pathname
      .split('/')
      .slice(1)
      .map((s) => decodeURIComponent(s));
    if (segs[segs.length - 1] === '') segs.pop();
    const route = segs.join('/');

    if (route === 'api/json') return this.json(req, res, this.rootJson(req, url.searchParams.has('tree')), url);
    if (route === 'crumbIssuer/api/json') return this.crumb(req, res, auth, url);
    if (route === 'createItem') return this.createItem(req, res, url, body);
    if (route === 'queue/api/json') {
      const items = this.engine.queue
        .filter((q) => q.state !== 'left')
        .sort((a, b) => b.dueAt - a.dueAt)
        .map((q) => this.queueJson(req, q));
      return this.json(req, res, { _class: 'hudson.model.Queue', discoverableItems: [], items }, url);
    }
    if (route === 'queue/cancelItem') {
      if (!this.requirePost(req, res)) return;
      const q = this.engine.getItem(Number(url.searchParams.get('id')));
      if (!q) return this.html(res, 404, `Provided id (${Number(url.searchParams.get('id'))}) not found`);
      if (!this.engine.cancelItem(q)) return this.html(res, 500, `Could not cancel run for id ${q.id}`);
      res.writeHead(204);
      res.end();
      return;
    }
    let m = /^queue\/item\/([0-9]+)(?:\/(.*))?$/.exec(route);
    if (m) {
      const q = this.engine.getItem(Number(m[1]));
      if (!q) return this.notFound(res);
      if (m[2] === 'api/json') return this.json(req, res, this.queueJson(req, q), url);
      if (m[2] === 'cancelQueue') {
        if (!this.requirePost(req, res)) return;
        this.engine.cancelItem(q); // §3.18: always 204, even for a LeftItem
        res.writeHead(204);
        res.end();
        return;
      }
      return this.notFound(res);
    }
    m = /^job\/([^/]+)(?:\/(.*))?$/.exec(route);
    if (m) return this.jobRoute(req, res, url, auth, m[1]!, m[2] ?? '', form, body);
    if (route === '') return this.html(res, 200, '<h1>Dashboard [Jenkins]</h1>', this.layoutHeaders());
    if (route === 'whoAmI/api/json') return this.json(req, res, this.whoAmI(auth), url);
    if (route === 'script') return this.script(req, res, auth);
    return this.notFound(res);
  }

  /** Headers of every page rendered with Jenkins' standard layout (§2.5: J layout.jelly, Functions.java). */
  private layoutHeaders(): Record<string, string> {
    return { 'X-Hudson': '1.395', 'X-Jenkins': this.version, 'X-Jenkins-Session': this.sessionHash };
  }

  /** GET /whoAmI/api/json (J hudson/security/WhoAmI.java): who the request is authenticated as; no permissions. */
  private whoAmI(auth: Auth | null) {
    return auth
      ? {
          _class: 'hudson.security.WhoAmI',
          anonymous: false,
          authenticated: true,
          authorities: ['authenticated'],
          name: auth.user,
        }
      : {
          _class: 'hudson.security.WhoAmI',
          anonymous: true,
          authenticated: true,
          authorities: ['anonymous'],
          name: 'anonymous',
        };
  }

  /**
   * The script console (J jenkins/model/Jenkins.java `_doScript`: `checkPermission(ADMINISTER)` before anything
   * else). Without Overall/Administer: 403 from AccessDeniedHandlerImpl with AccessDeniedException3's headers
   * (§2.1). With it, GET shows the form; this double never runs a script.
   */
  private script(req: IncomingMessage, res: ServerResponse, auth: Auth) {
    const admin = this.users.find((u) => u.name === auth.user)?.admin === true;
    if (!admin) {
      return this.html(
        res,
        403,
        `<p>${auth.user.replace(/[<&]/g, '')} is missing the Overall/Administer permission</p>`,
        {
          ...this.layoutHeaders(),
          'X-You-Are-Authenticated-As': auth.user,
          'X-You-Are-In-Group-Disabled':
            'JENKINS-39402: use -Dhudson.security.AccessDeniedException2.REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose',
          'X-Required-Permission': 'hudson.model.Hudson.Administer',
        },
      );
    }
    if (req.method === 'POST')
      return this.html(res, 500, '<h1>Oops!</h1><p>this double does not run scripts</p>', this.layoutHeaders());
    return this.html(
      res,
      200,
      '<h1>Script Console</h1><form method="post"><textarea name="script"></textarea></form>',
      this.layoutHeaders(),
    );
  }

  private crumb(req: IncomingMessage, res: ServerResponse, auth: Auth, url: URL) {
    let session = this.sessionOf(req);
    if (!session || this.sessions.get(session) !== auth.user) {
      session = randomBytes(16).toString('hex');
      this.sessions.set(session, auth.user);
      res.setHeader('Set-Cookie', `${this.cookieName}=${session}; Path=/; HttpOnly`);
    }
    return this.json(
      req,
      res,
      {
        _class: 'hudson.security.csrf.DefaultCrumbIssuer',
        crumb: this.crumbFor(auth.user, session),
        crumbRequestField: 'Jenkins-Crumb',
      },
      url,
    );
  }

  /** §2.7 checkGoodName. */
  private badName(name: string): string | null {
    if (!name) return 'No name is specified';
    if (name === '.' || name === '..') return `“${name}” is not an allowed name`;
    for (const c of name) {
      // eslint-disable-next-line no-control-regex
      if (/[\x00-\x1f\x7f]/.test(c) || '?*/\\%!@#$^&|<>[]:;'.includes(c)) return `‘${c}’ is an unsafe character`;
    }
    if (name.endsWith('.')) return 'A name cannot end with ‘.’';
    return null;
  }

  private async createItem(req: IncomingMessage, res: ServerResponse, url: URL, body: Buffer) {
    if (!this.requirePost(req, res)) return;
    const type = req.headers['content-type'];
    if (url.searchParams.get('mode') === 'copy')
      return this.failure(res, 'Copying jobs is not supported by this double');
    if (!type) return this.failure(res, 'No Content-Type header set');
    const name = (url.searchParams.get('name') ?? '').trim();
    if (!url.searchParams.has('name')) return this.failure(res, "Query parameter 'name' is required");
    const bad = this.badName(name);
    if (bad) return this.failure(res, bad);
    if (this.engine.getJob(name)) return this.failure(res, `A job already exists with the name ‘${name}’`);
    if (!/^(application|text)\/xml/.test(type)) return this.failure(res, 'No Content-Type header set');
    try {
      this.engine.createJob(name, body.toString('utf8'));
    } catch (e) {
      if (e instanceof ConfigError) return this.html(res, 500, `<h1>Oops!</h1><p>${e.message}</p>`);
      throw e;
    }
    await this.afterCreateItem?.(name);
    if (res.destroyed) return;
    res.writeHead(200, { 'Content-Length': '0' });
    res.end();
  }

  private parseDelay(v: string | null, fallbackMs: number): number {
    if (v === null) return fallbackMs;
    const m = /^([0-9]+)\s*(sec|secs|seconds?)?$/.exec(v.trim());
    if (!m) return fallbackMs;
    return m[2] ? Number(m[1]) * 1000 : Number(m[1]);
  }

  private async jobRoute(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    auth: Auth,
    name: string,
    rest: string,
    form: URLSearchParams | null,
    body: Buffer,
  ): Promise<void> {
    const job = this.engine.getJob(name);
    if (!job) return this.notFound(res);
    const jobUrl = `${this.base(req)}job/${encodeURIComponent(job.name)}/`;
    const userCause: Cause = {
      _class: 'hudson.model.Cause$UserIdCause',
      shortDescription: `Started by user ${auth.user}`,
      userId: auth.user,
      userName: auth.user,
    };

    switch (rest) {
      case '':
        if (req.method === 'DELETE') {
          this.engine.deleteJob(job, auth.user);
          res.writeHead(204);
          res.end();
          return;
        }
        return this.html(res, 200, `<h1>${job.name}</h1>`);
      case 'api/json':
        return this.json(
          req,
          res,
          this.jobJson(req, job, url.searchParams.has('tree') || Number(url.searchParams.get('depth') ?? 0) > 0),
          url,
        );
      case 'config.xml':
        if (req.method === 'GET' || req.method === 'HEAD') {
          res.writeHead(200, { 'Content-Type': 'application/xml' });
          res.end(req.method === 'HEAD' ? undefined : serialiseConfig(job.config));
          return;
        }
        if (req.method === 'POST') {
          try {
            this.engine.updateConfig(job, body.toString('utf8'));
          } catch (e) {
            if (e instanceof ConfigError)
              return this.html(res, 500, '<h1>Oops!</h1><p>Failed to process config.xml</p>');
            throw e;
          }
          res.writeHead(200, { 'Content-Length': '0' });
          res.end();
          return;
        }
        return this.html(res, 400, 'Unexpected method');
      case 'enable':
      case 'disable':
        if (!this.requirePost(req, res)) return;
        this.engine.setDisabled(job, rest === 'disable');
        return this.redirect(res, jobUrl);
      case 'doDelete':
        if (!this.requirePost(req, res)) return;
        this.engine.deleteJob(job, auth.user);
        return this.redirect(res, this.base(req));
      case 'cancelQueue':
        if (!this.requirePost(req, res)) return;
        for (const q of this.engine.queue) if (q.job === job.name.toLowerCase()) this.engine.cancelItem(q);
        return this.redirect(res, jobUrl);
      case 'build':
      case 'buildWithParameters':
        return this.trigger(req, res, url, job, rest, userCause, form!);
      default:
        break;
    }
    const m =
      /^([0-9]+|lastBuild|lastCompletedBuild|lastSuccessfulBuild|lastFailedBuild|lastStableBuild|firstBuild)(?:\/(.*))?$/.exec(
        rest,
      );
    if (!m) return this.notFound(res);
    const build = this.findBuild(job, m[1]!);
    if (!build) return this.notFound(res);
    const sub = m[2] ?? '';
    if (sub === 'api/json') return this.json(req, res, this.buildJson(req, job, build), url);
    if (sub === 'logText/progressiveText') return this.progressive(req, res, url, job, build, form);
    if (sub === 'consoleText') {
      res.writeHead(200, { 'Content-Type': 'text/plain;charset=UTF-8' });
      const p = this.engine.logPath(job.name, build.number);
      res.end(existsSync(p) ? readFileSync(p) : '');
      return;
    }
    if (sub === 'stop') {
      if (!this.requirePost(req, res)) return;
      this.engine.stop(job, build, auth.user);
      return this.redirect(res, (req.headers.referer as string | undefined) ?? '.'); // §3.12: forwardToPreviousPage
    }
    if (sub === 'toggleLogKeep') {
      // Run.doToggleLogKeep: @RequirePOST, flips keepLog, then forwardToPreviousPage.
      if (!this.requirePost(req, res)) return;
      this.engine.toggleKeepLog(job, build);
      return this.redirect(res, (req.headers.referer as string | undefined) ?? '.');
    }
    if (sub.startsWith('artifact/')) return this.artifact(req, res, job, build, sub.slice('artifact/'.length));
    return this.notFound(res); // includes `term` (§3.13)
  }

  private findBuild(job: Job, ref: string): Build | undefined {
    const b = job.builds;
    switch (ref) {
      case 'lastBuild':
        return b[0];
      case 'firstBuild':
        return b[b.length - 1];
      case 'lastCompletedBuild':
        return b.find((x) => x.state === 'COMPLETED');
      case 'lastSuccessfulBuild':
      case 'lastStableBuild':
        return b.find((x) => x.state === 'COMPLETED' && x.result === 'SUCCESS');
      case 'lastFailedBuild':
        return b.find((x) => x.state === 'COMPLETED' && x.result === 'FAILURE');
      default:
        return b.find((x) => x.number === Number(ref));
    }
  }

  /** §3.10 / §3.11. */
  private trigger(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    job: Job,
    kind: string,
    cause: Cause,
    form: URLSearchParams,
  ) {
    if (!this.requirePost(req, res)) return; // no job auth tokens in this double: GET is always 405 (§2.3)
    if (job.config.disabled) return this.html(res, 409, `${job.name} is not buildable`);
    const delay = this.parseDelay(url.searchParams.get('delay'), this.engine.quietPeriodMs(job));
    let params: Param[] | null = null;
    if (kind === 'build') {
      if (job.config.params.length)
        return this.html(
          res,
          400,
          [...url.searchParams.keys()].length ? 'This page expects a form submission' : 'Nothing is submitted',
        );
    } else {
      if (!job.config.params.length) return this.failure(res, `${job.name} is not parameterized`);
      if ((req.headers['content-type'] ?? '').startsWith('multipart/'))
        return this.html(res, 500, 'multipart parameters are not supported by this double');
      params = [];
      for (const def of job.config.params) {
        if (def.type === 'file') continue;
        const values = form.getAll(def.name);
        if (values.length > 1) return this.html(res, 500, `<h1>Oops!</h1><p>IllegalArgumentException: ${def.name}</p>`);
        let v = values[0] ?? def.defaultValue;
        if (def.trim) v = v.trim();
        params.push({ name: def.name, value: v });
      }
    }
    const r = this.engine.schedule(job, params, cause, delay);
    if (!r) return this.redirect(res, `${this.base(req)}job/${encodeURIComponent(job.name)}/`);
    const location = `${this.base(req)}queue/item/${r.item.id}/`;
    // /build reuses an identical item with 201; buildWithParameters answers 303 for it (since 2.308).
    if (!r.created && kind === 'buildWithParameters') return this.redirect(res, location, 303);
    res.writeHead(201, { Location: location, 'Content-Length': '0' });
    res.end();
  }

  /** §3.15: byte offsets, X-Text-Size, X-More-Data only while the build is not COMPLETED. */
  private progressive(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    job: Job,
    build: Build,
    form: URLSearchParams | null,
  ) {
    const startRaw = form?.get('start') ?? url.searchParams.get('start') ?? '0';
    if (!/^-?[0-9]+$/.test(startRaw)) return this.html(res, 500, '<h1>Oops!</h1><p>NumberFormatException</p>');
    const p = this.engine.logPath(job.name, build.number);
    const headers: Record<string, string> = { 'Content-Type': 'text/plain;charset=UTF-8' };
    if (build.state !== 'COMPLETED') headers['X-More-Data'] = 'true';
    if (!existsSync(p)) {
      res.writeHead(200, { ...headers, 'X-Text-Size': '0' });
      res.end();
      return;
    }
    const data = readFileSync(p);
    let start = Number(startRaw);
    if (start > data.length || start < 0) start = 0; // "text rolled over"
    res.writeHead(200, { ...headers, 'X-Text-Size': String(data.length) });
    res.end(data.subarray(start));
  }

  /** §3.19, with Range support (206) for resumable downloads. */
  private artifact(req: IncomingMessage, res: ServerResponse, job: Job, build: Build, rel: string) {
    if (!build.artifacts.includes(rel)) return this.notFound(res);
    const file = path.join(this.engine.archiveDir(job.name, build.number), rel);
    if (!existsSync(file)) return this.notFound(res);
    const size = statSync(file).size;
    const ext = path.extname(rel);
    const type =
      ext === '.json'
        ? 'application/json'
        : ext === '.log' || ext === '.txt' || rel.endsWith('SHA256SUMS')
          ? 'text/plain;charset=UTF-8'
          : 'application/octet-stream';
    const range = /^bytes=([0-9]+)-([0-9]*)$/.exec((req.headers.range as string | undefined) ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` });
        res.end();
        return;
      }
      res.writeHead(206, {
        'Content-Type': type,
        'Content-Length': String(end - start + 1),
        'Content-Range': `bytes ${start}-${end}/${size}`,
        'Accept-Ranges': 'bytes',
      });
      if (req.method === 'HEAD') {
        res.end();
        return;
      }
      createReadStream(file, { start, end }).pipe(res);
      return;
    }
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': String(size), 'Accept-Ranges': 'bytes' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    createReadStream(file).pipe(res);
  }

  // -------------------------------------------------------------------------------------------------- JSON
  private color(job: Job): string {
    const building = job.builds[0]?.state === 'BUILDING' || job.builds[0]?.state === 'POST_PRODUCTION';
    if (job.config.disabled) return building ? 'disabled_anime' : 'disabled';
    const last = job.builds[0];
    if (!last) return 'notbuilt';
    const resultColor = (r: Build['result']) =>
      (
        ({ SUCCESS: 'blue', UNSTABLE: 'yellow', FAILURE: 'red', ABORTED: 'aborted', NOT_BUILT: 'notbuilt' }) as Record<
          string,
          string
        >
      )[r ?? ''] ?? 'notbuilt';
    if (last.state === 'COMPLETED') return resultColor(last.result);
    const prev = job.builds.find((b) => b !== last && b.state === 'COMPLETED');
    return `${prev ? resultColor(prev.result) : 'notbuilt'}_anime`;
  }

  private rootJson(req: IncomingMessage, full: boolean) {
    const base = this.base(req);
    // With ?tree= any job field can be asked for; at depth 0 a job entry is the summary {_class,name,url,color}.
    const jobs = [...this.engine.jobs.values()]
      .sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()))
      .map((j) =>
        full
          ? this.jobJson(req, j, false)
          : {
              _class: 'hudson.model.FreeStyleProject',
              name: j.name,
              url: `${base}job/${encodeURIComponent(j.name)}/`,
              color: this.color(j),
            },
      );
    return {
      _class: 'hudson.model.Hudson',
      assignedLabels: [{ name: 'built-in' }],
      mode: 'NORMAL',
      nodeDescription: "the Jenkins controller's built-in node",
      nodeName: '',
      numExecutors: this.engine.opts.executors,
      description: null,
      jobs,
      overallLoad: {},
      primaryView: { _class: 'hudson.model.AllView', name: 'all', url: base },
      quietDownReason: null,
      quietingDown: false,
      slaveAgentPort: -1,
      unlabeledLoad: { _class: 'jenkins.model.UnlabeledLoadStatistics' },
      url: base,
      useCrumbs: true,
      useSecurity: true,
      views: [{ _class: 'hudson.model.AllView', name: 'all', url: base }],
    };
  }

  private buildRef(req: IncomingMessage, job: Job, b: Build | undefined) {
    return b
      ? {
          _class: 'hudson.model.FreeStyleBuild',
          number: b.number,
          url: `${this.base(req)}job/${encodeURIComponent(job.name)}/${b.number}/`,
        }
      : null;
  }

  private paramDefProperty(job: Job) {
    return {
      _class: 'hudson.model.ParametersDefinitionProperty',
      parameterDefinitions: job.config.params.map((p) =>
        p.type === 'string'
          ? {
              _class: 'hudson.model.StringParameterDefinition',
              defaultParameterValue: {
                _class: 'hudson.model.StringParameterValue',
                name: p.name,
                value: p.defaultValue,
              },
              description: p.description,
              name: p.name,
              type: 'StringParameterDefinition',
            }
          : {
              _class: 'hudson.model.FileParameterDefinition',
              defaultParameterValue: null,
              description: p.description,
              name: p.name,
              type: 'FileParameterDefinition',
            },
      ),
    };
  }

  private jobJson(req: IncomingMessage, job: Job, full: boolean) {
    const ref = (b: Build | undefined) => (full && b ? this.buildJson(req, job, b) : this.buildRef(req, job, b));
    const done = job.builds.filter((b) => b.state === 'COMPLETED');
    const q = this.engine.queue.find((i) => i.job === job.name.toLowerCase() && i.state !== 'left');
    const prop = job.config.params.length ? [this.paramDefProperty(job)] : [];
    return {
      _class: 'hudson.model.FreeStyleProject',
      actions: [...prop, {}, { _class: 'hudson.model.ViewJobAction' }],
      description: job.config.description,
      displayName: job.name,
      displayNameOrNull: null,
      fullDisplayName: job.name,
      fullName: job.name,
      name: job.name,
      url: `${this.base(req)}job/${encodeURIComponent(job.name)}/`,
      buildable: !job.config.disabled,
      builds: job.builds.slice(0, 100).map(ref),
      color: this.color(job),
      firstBuild: ref(job.builds[job.builds.length - 1]),
      healthReport: [],
      inQueue: q !== undefined,
      keepDependencies: false,
      lastBuild: ref(job.builds[0]),
      lastCompletedBuild: ref(done[0]),
      lastFailedBuild: ref(done.find((b) => b.result === 'FAILURE')),
      lastStableBuild: ref(done.find((b) => b.result === 'SUCCESS')),
      lastSuccessfulBuild: ref(done.find((b) => b.result === 'SUCCESS' || b.result === 'UNSTABLE')),
      lastUnstableBuild: ref(done.find((b) => b.result === 'UNSTABLE')),
      lastUnsuccessfulBuild: ref(done.find((b) => b.result !== 'SUCCESS')),
      nextBuildNumber: job.nextBuildNumber,
      property: prop,
      queueItem: q ? this.queueJson(req, q) : null,
      concurrentBuild: job.config.concurrentBuild,
      disabled: job.config.disabled,
      downstreamProjects: [],
      labelExpression: job.config.label,
      scm: { _class: 'hudson.scm.NullSCM' },
      upstreamProjects: [],
    };
  }

  private actions(params: Param[] | null, causes: Cause[]) {
    const a: unknown[] = [];
    if (params)
      a.push({
        _class: 'hudson.model.ParametersAction',
        parameters: params.map((p) => ({ _class: 'hudson.model.StringParameterValue', name: p.name, value: p.value })),
      });
    a.push({ _class: 'hudson.model.CauseAction', causes });
    return a;
  }

  private buildJson(req: IncomingMessage, job: Job, b: Build) {
    const building = b.state === 'BUILDING';
    const ok = job.builds.filter((x) => x.state === 'COMPLETED' && x.result === 'SUCCESS').slice(0, 3);
    const names = b.artifacts.map((p) => p.split('/').pop()!);
    return {
      _class: 'hudson.model.FreeStyleBuild',
      actions: this.actions(b.params, b.causes),
      artifacts: b.artifacts.map((p, i) => ({
        displayPath: b.artifacts.length > 20 ? null : names.filter((n) => n === names[i]).length > 1 ? p : names[i],
        fileName: names[i],
        relativePath: p,
      })),
      building,
      description: null,
      displayName: `#${b.number}`,
      duration: b.state === 'BUILDING' ? 0 : b.duration,
      estimatedDuration: ok.length ? Math.round(ok.reduce((s, x) => s + x.duration, 0) / ok.length) : -1,
      executor: building ? { _class: 'hudson.model.Executor' } : null,
      fullDisplayName: `${job.name} #${b.number}`,
      id: String(b.number),
      inProgress: b.state !== 'COMPLETED',
      keepLog: b.keepLog === true,
      number: b.number,
      queueId: b.queueId,
      result: building ? null : b.result,
      timestamp: b.timestamp,
      url: `${this.base(req)}job/${encodeURIComponent(job.name)}/${b.number}/`,
      builtOn: '',
      changeSet: { _class: 'hudson.scm.EmptyChangeLogSet', items: [], kind: null },
      culprits: [],
    };
  }

  /** §5.4. */
  private queueJson(req: IncomingMessage, q: QueueItem) {
    const job = this.engine.jobs.get(q.job);
    const name = job?.name ?? q.job;
    const common = {
      actions: this.actions(q.params, q.causes),
      blocked: q.state === 'blocked',
      buildable: q.state === 'buildable',
      id: q.id,
      inQueueSince: q.inQueueSince,
      params: (q.params ?? []).map((p) => `\n${p.name}=${p.value}`).join(''),
      stuck: false,
      task: {
        _class: 'hudson.model.FreeStyleProject',
        name,
        url: `${this.base(req)}job/${encodeURIComponent(name)}/`,
        color: job ? this.color(job) : 'notbuilt',
      },
      url: `queue/item/${q.id}/`,
    };
    switch (q.state) {
      case 'waiting':
        return {
          _class: 'hudson.model.Queue$WaitingItem',
          ...common,
          why: `In the quiet period. Expires in ${Math.max(0, (q.dueAt - Date.now()) / 1000).toFixed(1)} sec`,
          timestamp: q.dueAt,
        };
      case 'blocked': {
        const running = job?.builds.find((b) => b.state !== 'COMPLETED');
        return {
          _class: 'hudson.model.Queue$BlockedItem',
          ...common,
          why: running ? `Build #${running.number} is already in progress` : 'Waiting for the previous build to start',
          buildableStartMilliseconds: q.dueAt,
        };
      }
      case 'buildable':
        return {
          _class: 'hudson.model.Queue$BuildableItem',
          ...common,
          why: q.stuckWhy ?? 'Waiting for next available executor',
          buildableStartMilliseconds: q.dueAt,
          pending: false,
        };
      default:
        return {
          _class: 'hudson.model.Queue$LeftItem',
          ...common,
          why: null,
          cancelled: q.cancelled,
          executable:
            q.executable !== null
              ? {
                  _class: 'hudson.model.FreeStyleBuild',
                  number: q.executable,
                  url: `${this.base(req)}job/${encodeURIComponent(name)}/${q.executable}/`,
                }
              : null,
        };
    }
  }
}
