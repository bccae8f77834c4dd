/**
 * The crash-injection harness (`make chaos`; a short form runs in `make test`). For each stack (stacks.ts) it signs
 * up users over HTTP, requests builds through the JSON API as they would, and meanwhile SIGKILLs a random part
 * (web, glue, runner, SDK, Jenkins double) at random moments, restarting each killed long-lived part. Then it waits
 * (for conditions, not a clock) until nothing moves and checks:
 *   - every acknowledged build ended exactly once (never changed after it was final), as succeeded, failed or
 *     cancelled, with a reason when not succeeded; a build that failed because of a crash and was never retried,
 *     or that never ended, is LOST;
 *   - no build ran twice: the SDK ledger shows at most one run per request that ended on its own, and the backend
 *     holds at most one build per request key (Jenkins: asked through its REST API) - else DOUBLED;
 *   - nothing of the run is left: processes, kiln-sdk-* work dirs, the backend's work dirs and temp files,
 *     containers (real builds) - else LEFTOVERS;
 *   - the database is intact (SQLite integrity_check + row consistency; PostgreSQL row consistency).
 * Every choice comes from one seeded PRNG; the seed is printed. Only PIDs this harness started (or found below
 * them, identified by start time) are ever signalled.
 */
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  rmdirSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/shared/subprocess.js';
import { MAX_REQUEUES, glueKey } from '../../src/core/builds/requeue.js';
import { kilnSnapshot, writeFakeSdk } from '../helpers/glue.js';
import { Prng } from '../helpers/prng.js';
import { HttpClient } from '../helpers/web.js';
import type { Part } from './parts.js';
import { allProcs, cwdOf, envOf, type Proc } from './procs.js';
import {
  sdkDirsBelow,
  startJenkinsStack,
  startPgStack,
  startServeStack,
  systemEntries,
  systemTmp,
  type BackendBuild,
  type Hit,
  type RunContext,
  type Stack,
  type StackName,
} from './stacks.js';

export interface ChaosOptions {
  seed: number;
  /** Kills in the whole run, shared out over the stacks. */
  kills: number;
  stacks: StackName[];
  /** Builds with the real SDK (debian-minimal, raw, boot-tested), in the serve stack. */
  realBuilds: number;
  say?: (line: string) => void;
  /** Keep the run directory (logs, data) when something failed. */
  keep?: boolean;
}

export interface LostBuild {
  stack: StackName;
  id?: number;
  key: string;
  why: string;
}
export interface StackReport {
  name: StackName;
  kills: Array<{ at: number; target: string; what: string; hit?: Hit }>;
  builds: number;
  refused: number;
  lost: LostBuild[];
  doubled: string[];
  leftovers: string[];
  /** Other broken invariants: a state changed after final, no reason, database problems. */
  violations: string[];
  /** Facts worth reading that break nothing (retried builds, unattributed files). */
  notes: string[];
  states: Record<string, number>;
}
export interface ChaosReport {
  seed: number;
  runId: string;
  root: string;
  stacks: StackReport[];
  line: string;
  ok: boolean;
}

const repo = path.resolve(import.meta.dirname, '../..');
const FINAL = new Set(['succeeded', 'failed', 'cancelled', 'lost']);
/** Reasons that say a build ended because something crashed, not because of its Dockerfile. */
const CRASH_REASON =
  /interrupt|restart|SIGKILL|signal|vanish|no longer known|cut off|lost|killed|exited with status (137|143|null)/i;
/** What a requeue (or an automatic retry) looks like in a build's log or reason. */
const RETRIED = /requeu|retr(y|ied)|again automatically|second attempt/i;
/** Fake SDK behaviours (test/helpers/glue.ts) the users' Dockerfiles pick from. */
const MODES = ['ok', 'sleep 2', 'sleep 4', 'sleep 8', 'fail', 'noise 64'];
const OPEN_BUILDS = 5;

interface Tracked {
  key: string;
  user: User;
  dfId: number;
  mode: string;
  id?: number;
  refused?: string;
  /** Distinct states seen, in order. */
  seen: string[];
  reason?: string | null;
  backendBuild?: number | null;
  /** Times the web requeued it after an interruption (API `requeues`). */
  requeues?: number;
  cancelAsked: boolean;
  violations: string[];
}

/** An HTTP answer read whole. */
interface Answer {
  status: number;
  text: string;
  json<T>(): T;
}

interface User {
  name: string;
  jar: Map<string, string>;
  token?: string;
  dockerfiles: Array<{ id: number; mode: string }>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The chaos SDK: fake for `# fake:` Dockerfiles, else the real one; each run leaves a start and an end line. */
function writeChaosSdk(bin: string, kiln: string, fake: string, ledger: string): string {
  const file = path.join(bin, 'chaos-sdk.sh');
  writeFileSync(
    file,
    `#!/bin/sh
# The chaos harness's SDK. Not exec'd into, so the ledger gets the end line with the SDK's status.
prev=; df=; out=
for a in "$@"; do
  [ "$prev" = --dockerfile ] && df=$a
  [ "$prev" = --out ] && out=$a
  prev=$a
done
# cwd: the build's work dir (local runner) or workspace (Jenkins), inside its stack's directory.
id="job=\${KILN_JOB:-\${JOB_NAME:-}} build=\${KILN_BUILD:-\${BUILD_NUMBER:-}} key=\${KILN_BUILD_KEY:-} out=$out cwd=$(pwd)"
echo "start $$ $id" >> '${ledger}'
if grep -q '^# fake:' "$df"; then '${fake}' "$@"; else '${kiln}' sdk build "$@"; fi
rc=$?
echo "end $$ rc=$rc $id" >> '${ledger}'
# Killed by a signal: die by the same one, so the runner sees what it would see of the SDK itself.
if [ $rc -gt 128 ] && [ $rc -lt 160 ]; then kill -$((rc - 128)) $$; fi
exit $rc
`,
  );
  chmodSync(file, 0o755);
  return file;
}

/** A tmpfs tree named after a live SDK (`kiln-sdk-tree-<pid>-<start time>-*`, src/sdk/staging.ts). */
function treeOfLiveSdk(p: string): boolean {
  const m = /^kiln-sdk-tree-(\d+)-(\d+)-/.exec(path.basename(p));
  if (!m) return false;
  try {
    const stat = readFileSync(`/proc/${m[1]}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === m[2];
  } catch {
    return false;
  }
}

interface LedgerRun {
  pid: string;
  id: string;
  rc?: number;
}
function readLedger(file: string): LedgerRun[] {
  const runs: LedgerRun[] = [];
  // By pid, the latest run that started with it (a pid may come back later in a long run).
  const open = new Map<string, LedgerRun>();
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  for (const line of text.split('\n')) {
    const m = /^(start|end) (\d+) (?:rc=(\d+) )?(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === 'start') {
      const r = { pid: m[2]!, id: m[4]! };
      runs.push(r);
      open.set(m[2]!, r);
    } else {
      const r = open.get(m[2]!);
      if (r) r.rc = Number(m[3]);
      open.delete(m[2]!);
    }
  }
  return runs;
}

/** Ledger id -> the request it ran for: local runs by job and build number, Jenkins runs by the request key. */
function ledgerKey(r: LedgerRun, byJobBuild: Map<string, string>): string | undefined {
  const key = /key=(\S+)/.exec(r.id)?.[1];
  if (key) return key;
  const jb = ledgerJobBuild(r);
  return jb ? byJobBuild.get(jb) : undefined;
}

/** The backend build a ledger run was for (`job#build`): from the local runner's --out path or its environment. */
function ledgerJobBuild(r: LedgerRun): string | undefined {
  const m =
    /out=\S*\/kiln-job-(\d+)\/builds\/(\d+)\/archive/.exec(r.id) ?? /job=(?:kiln-job-)?(\d+) build=(\d+)/.exec(r.id);
  return m ? `${m[1]}#${m[2]}` : undefined;
}

/** Drives one stack: users, build requests, cancels, the observer, the killer; then quiescence and the checks. */
class StackRun {
  readonly tracked: Tracked[] = [];
  readonly users: User[] = [];
  readonly report: StackReport;
  private loadOn = true;
  private observing = true;
  private requestWaiters: Array<() => void> = [];
  private lastChange = Date.now();

  /**
   * Two streams from the run's seed: the killer's (targets, gaps, restart delays; the same sequence whatever the
   * load did) and the users' (what they build, cancel and which web they reach). The interleaving of the two
   * follows the machine's timing, so a replay repeats the choices, not the exact moments.
   */
  constructor(
    readonly stack: Stack,
    readonly ctx: RunContext,
    private readonly killRng: Prng,
    private readonly rng: Prng,
    private readonly say: (l: string) => void,
    private readonly realBuilds: number,
  ) {
    this.report = {
      name: stack.name,
      kills: [],
      builds: 0,
      refused: 0,
      lost: [],
      doubled: [],
      leftovers: [],
      violations: [],
      notes: [],
      states: {},
    };
  }

  private client(u: User): HttpClient {
    return new HttpClient(this.rng.pick(this.stack.webs), u.jar);
  }

  /**
   * A request through any web that answers, body included (a killed one refuses connections until it is back, or
   * cuts the answer off half-way: then it counts as no answer, and the caller tries again later).
   */
  private async call(u: User, fn: (c: HttpClient) => Promise<Response>): Promise<Answer | undefined> {
    const webs = [...this.stack.webs].sort(() => this.rng.next() - 0.5);
    for (const base of webs) {
      try {
        const r = await fn(new HttpClient(base, u.jar));
        const text = await r.text();
        return { status: r.status, text, json: <T>() => JSON.parse(text) as T };
      } catch {
        /* refused or cut: the next web, or later */
      }
    }
    return undefined;
  }

  private async token(u: User, fresh = false): Promise<string | undefined> {
    if (u.token && !fresh) return u.token;
    const r = await this.call(u, (c) => c.get('/api/csrf', { accept: 'application/json' }));
    if (r?.status === 200) u.token = r.json<{ token: string }>().token;
    return u.token;
  }

  async setup(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      const u: User = { name: `chaos-${this.stack.name}-${i}`, jar: new Map(), dockerfiles: [] };
      await this.client(u).signUp(u.name);
      const modes = [...MODES];
      for (const mode of modes) {
        const t = await this.token(u);
        const r = await this.client(u).postJson(
          '/api/dockerfiles',
          { name: `chaos-${mode.replace(/\s+/g, '-')}`, content: `FROM debian:bookworm\n# fake: ${mode}\nRUN true\n` },
          { 'x-csrf-token': t! },
        );
        if (r.status !== 201) throw new Error(`create Dockerfile: ${r.status} ${await r.text()}`);
        u.dockerfiles.push({ id: ((await r.json()) as { dockerfile: { id: number } }).dockerfile.id, mode });
      }
      this.users.push(u);
    }
    if (this.realBuilds > 0) {
      // The real SDK, labelled with this run: its containers (and only its) can then be found afterwards.
      const u = this.users[0]!;
      const base = readFileSync(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8').replace(
        /^FROM debian:bookworm$/m,
        `FROM debian:bookworm\nLABEL io.kiln.chaos.run="${this.ctx.runId}"`,
      );
      const r = await this.client(u).postJson(
        '/api/dockerfiles',
        { name: 'chaos-real', content: base },
        { 'x-csrf-token': (await this.token(u))! },
      );
      if (r.status !== 201) throw new Error(`create real Dockerfile: ${r.status} ${await r.text()}`);
      u.dockerfiles.push({ id: ((await r.json()) as { dockerfile: { id: number } }).dockerfile.id, mode: 'real' });
    }
  }

  /** Sends (or re-sends, same key) a build request; true once the web acknowledged it. */
  private async request(t: Tracked): Promise<void> {
    if (t.id !== undefined || t.refused) return;
    const waiters = this.requestWaiters.splice(0);
    const r = await this.call(t.user, async (c) => {
      const token = await this.token(t.user);
      const p = c.request(`/api/dockerfiles/${t.dfId}/builds`, {
        method: 'POST',
        body: JSON.stringify({ key: t.key }),
        headers: { 'content-type': 'application/json', 'x-csrf-token': token ?? '' },
        signal: AbortSignal.timeout(60_000),
      });
      for (const w of waiters) w();
      return p;
    });
    if (!r) return;
    if (r.status === 200 || r.status === 201) {
      const b = r.json<{ build: { id: number; state: string } }>().build;
      t.id = b.id;
      this.observe(t, b.state, null);
    } else if (r.status === 403) {
      await this.token(t.user, true);
    } else if (r.status === 429) {
      t.refused = 'quota';
    } else if (r.status < 500) {
      t.refused = `${r.status}`;
      this.report.violations.push(`build request ${t.key} refused with ${r.status}: ${r.text.slice(0, 200)}`);
    }
  }

  private observe(t: Tracked, state: string, reason: string | null, backendBuild?: number | null): void {
    const last = t.seen[t.seen.length - 1];
    if (last !== state) {
      if (last !== undefined && FINAL.has(last))
        t.violations.push(`build ${t.id} changed from ${last} to ${state} after it was final`);
      t.seen.push(state);
      this.lastChange = Date.now();
    }
    if (FINAL.has(state)) t.reason = reason;
    if (backendBuild !== undefined) t.backendBuild = backendBuild;
  }

  private async poll(t: Tracked): Promise<void> {
    if (t.id === undefined) return;
    const r = await this.call(t.user, (c) => c.request(`/api/builds/${t.id}`, { signal: AbortSignal.timeout(60_000) }));
    if (r?.status !== 200) return;
    const b = r.json<{
      build: { state: string; reason: string | null; backendBuild: number | null; requeues?: number };
    }>().build;
    this.observe(t, b.state, b.reason, b.backendBuild);
    if (b.requeues) t.requeues = b.requeues;
  }

  /** Users press Build (new keys), now and then Cancel; unacknowledged requests are re-sent with their key. */
  private async loadLoop(): Promise<void> {
    // One real build while the kills go on (what a killed real SDK leaves: containers, cgroups, QEMU), the rest
    // after the last kill (a real build must still succeed on the stack the kills left behind).
    let realLeft = Math.min(1, this.realBuilds);
    while (this.loadOn) {
      await sleep(this.rng.int(300, 1500));
      // A handful of builds open at a time: enough that every kill finds some in flight, few enough that the
      // runners keep up and quiescence comes soon after the last kill.
      if (this.tracked.filter((x) => !x.refused && !FINAL.has(x.seen.at(-1) ?? '')).length >= OPEN_BUILDS) continue;
      const u = this.rng.pick(this.users);
      const fakes = u.dockerfiles.filter((d) => d.mode !== 'real');
      let df = this.rng.pick(fakes);
      const real = u.dockerfiles.find((d) => d.mode === 'real');
      if (realLeft > 0 && real) {
        df = real;
        realLeft--;
      }
      await this.guarded('build request', () => this.request(this.newRequest(u, df)));
      if (this.rng.chance(0.08)) {
        const open = this.tracked.filter(
          (x) => x.id !== undefined && x.mode !== 'real' && !FINAL.has(x.seen.at(-1) ?? ''),
        );
        if (open.length) {
          const c = this.rng.pick(open);
          c.cancelAsked = true;
          await this.guarded('cancel', async () => {
            const token = await this.token(c.user);
            await this.call(c.user, (cl) =>
              cl.postJson(`/api/builds/${c.id}/cancel`, {}, { 'x-csrf-token': token ?? '' }),
            );
          });
        }
      }
    }
  }

  /** A user's step that went wrong on the client side (an answer that is not JSON, say) is noted, not fatal. */
  private async guarded(what: string, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.report.notes.push(`harness: ${what}: ${(e as Error).message.slice(0, 200)}`);
    }
  }

  private newRequest(u: User, df: { id: number; mode: string }): Tracked {
    const t: Tracked = {
      key: `chaos-${randomBytes(9).toString('base64url')}`,
      user: u,
      dfId: df.id,
      mode: df.mode,
      seen: [],
      cancelAsked: false,
      violations: [],
    };
    this.tracked.push(t);
    return t;
  }

  /** Re-sends unacknowledged requests and follows every open build through the API (which also refreshes it). */
  private async observeLoop(): Promise<void> {
    while (this.observing) {
      await sleep(1000);
      for (const t of this.tracked.filter((x) => x.id === undefined && !x.refused))
        await this.guarded('build request', () => this.request(t));
      const open = this.tracked.filter((x) => x.id !== undefined && !FINAL.has(x.seen.at(-1) ?? ''));
      // A few per pass: each status view may be a glue call (through OpenSSH, a process per call).
      for (const t of open.sort(() => this.rng.next() - 0.5).slice(0, 6))
        await this.guarded('status', () => this.poll(t));
    }
  }

  /**
   * Starts a killed part again, as a supervisor would (systemd's Restart=on-failure): a start that fails is a
   * finding (recorded once per distinct message, with the part's last words) and is tried again.
   */
  private async restart(part: Part): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await part.start();
        return;
      } catch (e) {
        const lines = (e as Error).message.split('\n');
        const msg = `${lines[0]} ${lines.find((l) => /^kiln:/.test(l)) ?? ''}`.trim();
        const v = `${part.name} did not come back after a SIGKILL (start attempt ${attempt}): ${msg}`;
        if (!this.report.violations.some((x) => x.includes(msg)))
          this.report.violations.push(`${v}\n${(e as Error).message.slice(0, 1500)}`);
        this.say(`  ${this.stack.name}: ${v}`);
        if (attempt >= 30) throw e;
        await sleep(2000);
      }
    }
  }

  /** Waits for the next build request to go out (a kill timed into it), or a few seconds. */
  private nextRequest(): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, 5000);
      this.requestWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async exercise(kills: number): Promise<void> {
    const started = Date.now();
    const load = this.loadLoop();
    const observer = this.observeLoop();
    for (let k = 0; k < kills; k++) {
      await sleep(this.killRng.int(500, 4000));
      let done: { target: string; what: string; hit?: Hit } | undefined;
      for (let attempt = 0; !done && attempt < 40; attempt++) {
        const target = this.killRng.weighted(this.stack.targets.map((x) => [x, x.weight] as const));
        // Sometimes into a request in flight (a build POST between the web's commit and its answer, a glue create).
        if (target.part && this.killRng.chance(0.3)) {
          await this.nextRequest();
          await sleep(this.killRng.int(0, 250));
        }
        const what = await target.kill();
        if (what) done = { target: target.name, ...what };
        else await sleep(250);
        if (what && target.part) {
          await sleep(this.killRng.int(0, 2000));
          await this.restart(target.part);
        }
      }
      if (!done) throw new Error(`${this.stack.name}: nothing to kill after 40 tries`);
      this.report.kills.push({ at: Date.now() - started, ...done });
      this.say(`  ${this.stack.name} kill ${k + 1}/${kills}: ${done.what}`);
    }
    this.loadOn = false;
    await load;
    for (const u of this.users) {
      const real = u.dockerfiles.find((d) => d.mode === 'real');
      for (let i = 1; real && i < this.realBuilds; i++) await this.request(this.newRequest(u, real));
    }
    await this.quiesce();
    const scratch = this.stack.scratchJobs?.() ?? [];
    if (scratch.length) {
      this.report.notes.push(
        `a killed build's SDK scratch in the workspace of job(s) ${scratch.join(', ')}: one more build of each (its step empties the workspace first)`,
      );
      for (const id of scratch) {
        const u = this.users.find((x) => x.dockerfiles.some((d) => d.id === id));
        const df = u?.dockerfiles.find((d) => d.id === id);
        if (u && df) await this.request(this.newRequest(u, df));
      }
      await this.quiesce();
    }
    this.observing = false;
    await observer;
  }

  /** Until every request is acknowledged and final and the backend is idle, or nothing changed for a long while. */
  private async quiesce(): Promise<void> {
    const stallMs = this.tracked.some((t) => t.mode === 'real') ? 20 * 60_000 : 4 * 60_000;
    this.lastChange = Date.now();
    let lastBusy = '';
    for (;;) {
      await sleep(2000);
      const pending = this.tracked.filter((t) => !t.refused && (t.id === undefined || !FINAL.has(t.seen.at(-1) ?? '')));
      for (const t of pending)
        await this.guarded('status', () => (t.id === undefined ? this.request(t) : this.poll(t)));
      const busy = (await this.stack.backendBusy().catch((e: Error) => [`backend unreadable: ${e.message}`])).join(
        '; ',
      );
      if (busy !== lastBusy) {
        lastBusy = busy;
        this.lastChange = Date.now();
      }
      const open = this.tracked.filter((t) => !t.refused && (t.id === undefined || !FINAL.has(t.seen.at(-1) ?? '')));
      if (open.length === 0 && busy === '') return;
      if (Date.now() - this.lastChange > stallMs) {
        this.report.notes.push(
          `stopped waiting after ${stallMs / 60_000} min without change: ${open.length} open builds; backend: ${busy || 'idle'}`,
        );
        return;
      }
    }
  }

  /** Cgroups and tmpfs trees this run's real builds left; removed by cleanSystem() once reported. */
  private systemLeft: string[] = [];

  /**
   * A real SDK's cgroup and tmpfs tree have random names outside our directories: one that appeared during this
   * stack's run is ours when it was made while one of our real builds ran (another run's build could coincide; the
   * report names the build). Cgroups come once per engine hierarchy: one finding per name.
   */
  private systemLeftovers(beforeSystem: Set<string>, backend: BackendBuild[]): string[] {
    const realJobs = new Set(this.tracked.filter((t) => t.mode === 'real').map((t) => t.dfId));
    const windows = backend
      .filter((b) => realJobs.has(b.job) && b.startedAt)
      .map((b) => ({
        b,
        from: Date.parse(b.startedAt!) - 2000,
        to: (b.finishedAt ? Date.parse(b.finishedAt) : Date.now()) + 5000,
      }));
    const found = new Map<string, string[]>();
    for (const e of systemEntries()) {
      if (beforeSystem.has(e)) continue;
      const st = statSync(e, { throwIfNoEntry: false });
      if (!st) continue;
      if (treeOfLiveSdk(e)) {
        this.report.notes.push(`${e} belongs to an SDK still running (another run's build): not counted, not removed`);
        continue;
      }
      const born = Math.min(st.mtimeMs, st.ctimeMs);
      const w = windows.find((x) => born >= x.from && born <= x.to);
      if (!w) {
        this.report.notes.push(`${e} appeared during the run but not while a real build of ours ran: not counted`);
        continue;
      }
      this.systemLeft.push(e);
      const name = `${path.basename(e)} (made while real build ${w.b.job}#${w.b.build} ran)`;
      found.set(name, [...(found.get(name) ?? []), e]);
    }
    return [...found].map(
      ([name, paths]) =>
        `${paths[0]!.startsWith('/dev/shm') ? 'staging tree' : 'pids cgroup'} ${name} left: ${paths.length === 1 ? paths[0] : `${paths.length} hierarchies, e.g. ${paths[0]}`}`,
    );
  }

  /** Removes what systemLeftovers() attributed to this run (empty cgroups only; the engine's are never touched). */
  cleanSystem(): void {
    for (const e of this.systemLeft) {
      try {
        if (e.startsWith('/dev/shm/')) rmSync(e, { recursive: true, force: true });
        else rmdirSync(e);
      } catch {
        /* still in use: left to its owner */
      }
    }
  }

  /** The invariant checks, while the stack is still up (quiet). */
  async check(before: Set<string>, beforeSystem: Set<string>): Promise<void> {
    const rep = this.report;
    const acked = this.tracked.filter((t) => t.id !== undefined);
    rep.builds = acked.length;
    rep.refused = this.tracked.filter((t) => t.refused).length;
    for (const t of this.tracked.filter((x) => x.id === undefined && !x.refused)) {
      rep.lost.push({ stack: this.stack.name, key: t.key, why: 'never acknowledged although the web came back' });
    }
    // A requeue after an interruption reaches the glue under a key derived from the request's (web requeue.ts).
    const request = new Map<string, string>();
    for (const t of acked)
      for (let n = 0; n <= MAX_REQUEUES; n++) request.set(glueKey({ idempotency_key: t.key, requeues: n }), t.key);
    const backend = await this.stack.backendBuilds();
    const backendReason = new Map(backend.map((b) => [`${b.job}#${b.build}`, b.detail]));
    for (const t of acked) {
      const st = t.seen.at(-1) ?? '?';
      // The backend's own reason too: the web may have lost it (a cancel racing the end records no reason).
      const why = `${t.reason ?? ''} ${backendReason.get(`${t.dfId}#${t.backendBuild}`) ?? ''}`;
      rep.states[st] = (rep.states[st] ?? 0) + 1;
      rep.violations.push(...t.violations);
      if (!FINAL.has(st)) {
        rep.lost.push({
          stack: this.stack.name,
          id: t.id,
          key: t.key,
          why: `never ended: still ${st} (seen ${t.seen.join(' -> ')})`,
        });
        continue;
      }
      if (st !== 'succeeded' && !t.reason)
        rep.violations.push(
          `build ${t.id} ended ${st} without a reason${t.cancelAsked ? ' (a cancel was asked while it ended)' : ''}`,
        );
      if (st === 'cancelled' && !t.cancelAsked)
        rep.violations.push(`build ${t.id} was cancelled but nobody asked (reason: ${t.reason})`);
      if (st === 'succeeded' && t.mode === 'fail')
        rep.violations.push(`build ${t.id} of a failing Dockerfile succeeded`);
      // Cut off by a crash: its reason says so, or this harness killed its SDK or build step.
      const hitDirectly = rep.kills.some(
        (k) =>
          k.hit &&
          ((k.hit.key !== undefined && request.get(k.hit.key) === t.key) ||
            (k.hit.job === t.dfId && k.hit.build !== undefined && k.hit.build === t.backendBuild)),
      );
      const crashed =
        st === 'lost' || (st === 'failed' && (hitDirectly || (t.mode !== 'fail' && CRASH_REASON.test(why))));
      if (st === 'failed' && t.mode !== 'fail' && t.mode !== 'real' && !crashed && t.reason)
        rep.violations.push(`build ${t.id} (${t.mode}) failed for no crash-shaped reason: ${t.reason}`);
      if (st === 'succeeded' && t.mode === 'real' && this.realBuilds > 0)
        rep.notes.push(`real build ${t.id} succeeded`);
      if (crashed) {
        const log = t.requeues ? '' : await this.fullLog(t);
        if (t.requeues || RETRIED.test(`${t.reason ?? ''}\n${log}`))
          rep.notes.push(`build ${t.id}: requeued after a crash, then ${st}: ${t.reason}`);
        else
          rep.lost.push({
            stack: this.stack.name,
            id: t.id,
            key: t.key,
            why: `${st} by a crash${hitDirectly ? ' (its SDK or build step was killed)' : ''} and not retried: ${t.reason}`,
          });
      }
    }

    // Doubled: the backend's builds per request, and the SDK runs per request that ended on their own.
    const ledger = readLedger(this.ctx.ledger).filter((r) => r.id.includes(`cwd=${this.stack.dir}/`));
    // A backend build whose SDK never ended by itself (the ledger, our own witness, has no exit 0/1 for it: killed,
    // or its step killed before it started) was cut off whatever its backend calls it: Jenkins says FAILURE for a step whose SDK was SIGKILLed, and the glue
    // reports that as lost (no result.json), so the web requeues it.
    const endedRuns = new Set(
      ledger
        .filter((r) => r.rc === 0 || r.rc === 1)
        .map((r) => ledgerJobBuild(r))
        .filter(Boolean),
    );
    const cutOff = (b: BackendBuild) =>
      ['lost', 'ABORTED', 'cancelled'].includes(b.state) ||
      (b.state === 'FAILURE' && !endedRuns.has(`${b.job}#${b.build}`));
    const byJobBuild = new Map(backend.filter((b) => b.key).map((b) => [`${b.job}#${b.build}`, b.key!]));
    const backendState = new Map(backend.map((b) => [`${b.job}#${b.build}`, b.state]));
    const perKey = new Map<string, BackendBuild[]>();
    for (const b of backend) {
      const key = b.key && request.get(b.key);
      if (!key) {
        rep.doubled.push(
          `backend build ${b.job}#${b.build} (${b.state}) belongs to no acknowledged request (key ${b.key ?? 'none'})`,
        );
        continue;
      }
      perKey.set(key, [...(perKey.get(key) ?? []), b]);
    }
    for (const [key, list] of perKey) {
      // Builds cut off (lost, ABORTED) or cancelled did not run to their end: one that did is the request's build.
      const whole = list.filter((b) => !cutOff(b));
      if (whole.length > 1)
        rep.doubled.push(
          `request ${key}: ${whole.length} backend builds ran (${whole.map((b) => `${b.job}#${b.build} ${b.state}`).join(', ')})`,
        );
    }
    const runs = new Map<string, LedgerRun[]>();
    for (const r of ledger) {
      const glue = ledgerKey(r, byJobBuild);
      const key = glue && request.get(glue);
      if (!key) continue;
      runs.set(key, [...(runs.get(key) ?? []), r]);
    }
    for (const [key, list] of runs) {
      // Ran to its end: succeeded, or failed on its own (not stopped: a stopped real SDK also exits 1, after its
      // clean-up, and its backend build then says lost or cancelled).
      // Under Jenkins, an SDK that exited 0 in a build the controller's crash cut off (ABORTED) never had its
      // artifacts archived: nothing of it can be downloaded, so its requeue is the build, not a double. The local
      // runner's `lost` gets no such pass: its SDK's output is on disk, and recovery must take it (local/index.ts).
      const whole = list.filter((r) => {
        const st = backendState.get(ledgerJobBuild(r) ?? '') ?? '';
        return (r.rc === 0 && st !== 'ABORTED') || (r.rc === 1 && !['lost', 'ABORTED', 'cancelled'].includes(st));
      });
      if (whole.length > 1) rep.doubled.push(`request ${key}: the SDK ran to its end ${whole.length} times`);
      if (list.length > 1)
        rep.notes.push(
          `request ${key}: the SDK started ${list.length} times (${list.map((r) => `rc=${r.rc ?? 'killed'}`).join(', ')})`,
        );
    }
    rep.notes.push(
      `backend builds ${backend.length} for ${acked.length} acknowledged requests; SDK runs ${ledger.length}`,
    );

    // Files: looked at twice, a few seconds apart, so a build's own clean-up right after its end is not counted.
    const files = async () => {
      const out = [
        ...(await this.stack.backendLeftovers()),
        ...sdkDirsBelow(this.stack.dir).map((d) => `SDK work dir left: ${d}`),
      ];
      for (const d of systemTmp().flatMap((t) => sdkDirsBelow(t, 0))) {
        if (before.has(d)) continue;
        const owner = (() => {
          try {
            return readFileSync(path.join(d, 'owner'), 'utf8');
          } catch {
            return '';
          }
        })();
        if (owner.includes(this.ctx.root)) out.push(`SDK work dir left in the system temp dir: ${d}`);
      }
      return out;
    };
    const first = await files();
    rep.leftovers.push(...(await this.leftoverProcesses()));
    const again = new Set(await files());
    rep.leftovers.push(...first.filter((f) => again.has(f)));
    if (this.realBuilds > 0) rep.leftovers.push(...this.systemLeftovers(beforeSystem, backend));
  }

  /** Processes of this run still alive at quiescence that are not the stack's own long-lived parts. */
  private async leftoverProcesses(): Promise<string[]> {
    const mine = (p: Proc) =>
      envOf(p.pid, 'KILN_CHAOS_RUN') === this.ctx.runId ||
      p.cmdline.includes(this.stack.dir) ||
      cwdOf(p.pid).startsWith(this.stack.dir);
    const first = allProcs().filter((p) => mine(p) && !this.stack.expectedProcess(p));
    // Twice, a few seconds apart: a status request in flight is not a leftover.
    await sleep(3000);
    const again = new Set(
      allProcs()
        .filter((p) => mine(p) && !this.stack.expectedProcess(p))
        .map((p) => `${p.pid}/${p.start}`),
    );
    return first
      .filter((p) => again.has(`${p.pid}/${p.start}`))
      .map((p) => `process ${p.pid} still running: ${p.cmdline.slice(0, 200)} (cwd ${cwdOf(p.pid)})`);
  }

  private async fullLog(t: Tracked): Promise<string> {
    let text = '';
    let offset = 0;
    for (let i = 0; i < 50; i++) {
      const r = await this.call(t.user, (c) => c.get(`/api/builds/${t.id}/log?offset=${offset}`));
      if (r?.status !== 200) break;
      const chunk = r.json<{ text: string; nextOffset: number; more: boolean }>();
      text += chunk.text;
      if (chunk.nextOffset <= offset || chunk.text === '') break;
      offset = chunk.nextOffset;
    }
    return text;
  }
}

/** Splits `total` kills over `n` stacks as evenly as possible. */
const share = (total: number, n: number, i: number) => Math.floor(total / n) + (i < total % n ? 1 : 0);

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const say = o.say ?? (() => undefined);
  const killRng = new Prng(o.seed);
  const loadRng = new Prng((o.seed ^ 0x9e3779b9) >>> 0);
  const runId = `${o.seed.toString(16)}-${randomBytes(3).toString('hex')}`;
  const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-chaos-'));
  say(`chaos: run ${runId} in ${root} (seed ${o.seed}; CHAOS_SEED=${o.seed} replays the choices)`);
  const bin = path.join(root, 'bin');
  const kiln = await kilnSnapshot(root);
  const fakeSdk = writeFakeSdk(path.dirname(kiln), { scratch: true })[0]!;
  const ledger = path.join(root, 'ledger');
  writeFileSync(ledger, '');
  mkdirSync(bin, { recursive: true });
  const ctx: RunContext = { runId, root, kiln, fakeSdk, ledger, repo, sdk: '' };
  ctx.sdk = writeChaosSdk(bin, kiln, fakeSdk, ledger);
  const before = new Set(systemTmp().flatMap((t) => sdkDirsBelow(t, 0)));
  const reports: StackReport[] = [];
  const pick = (n: number) => killRng.int(0, n - 1);
  try {
    for (const [i, name] of o.stacks.entries()) {
      const kills = share(o.kills, o.stacks.length, i);
      say(`chaos: stack ${name}: starting (${kills} kills)`);
      const beforeSystem = new Set(systemEntries());
      const stack =
        name === 'serve'
          ? await startServeStack(ctx, pick)
          : name === 'pg'
            ? await startPgStack(ctx, pick)
            : await startJenkinsStack(ctx, pick);
      const sr = new StackRun(stack, ctx, killRng, loadRng, say, name === 'serve' ? o.realBuilds : 0);
      try {
        await sr.setup();
        await sr.exercise(kills);
        await sr.check(before, beforeSystem);
      } catch (e) {
        sr.report.violations.push(`the harness failed: ${(e as Error).stack ?? String(e)}`);
      } finally {
        await stack.stop().catch((e: Error) => sr.report.violations.push(`stopping the stack: ${e.message}`));
        sr.report.violations.push(
          ...(await stack
            .dbCheck(sr.tracked.filter((t) => t.id !== undefined).map((t) => t.id!))
            .catch((e: Error) => [`database check failed: ${e.message}`])),
        );
        if (o.realBuilds > 0 && name === 'serve') sr.report.leftovers.push(...(await containersOf(runId)));
        sr.cleanSystem();
        await stack.cleanup();
        const bad =
          sr.report.lost.length + sr.report.doubled.length + sr.report.leftovers.length + sr.report.violations.length;
        if (bad) {
          sr.report.notes.push(
            ...stack.parts.map((p) => `--- last lines of ${p.name} (${p.logFile}):\n${p.excerpt(15)}`),
          );
        }
        reports.push(sr.report);
        say(stackLine(sr.report));
      }
    }
  } finally {
    if (o.realBuilds > 0) await removeImagesOf(runId);
  }
  const sum = (f: (r: StackReport) => number) => reports.reduce((a, r) => a + f(r), 0);
  const line = `chaos: ${sum((r) => r.kills.length)} kills, ${sum((r) => r.builds)} builds, ${sum((r) => r.lost.length)} lost, ${sum((r) => r.doubled.length)} doubled, ${sum((r) => r.leftovers.length)} leftovers (seed ${o.seed})`;
  const ok = sum((r) => r.lost.length + r.doubled.length + r.leftovers.length + r.violations.length) === 0;
  if (ok || !o.keep) rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  return { seed: o.seed, runId, root, stacks: reports, line, ok };
}

export function stackLine(r: StackReport): string {
  const byTarget = Object.entries(
    r.kills.reduce<Record<string, number>>((a, k) => ({ ...a, [k.target]: (a[k.target] ?? 0) + 1 }), {}),
  )
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const states = Object.entries(r.states)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `chaos: stack ${r.name}: ${r.kills.length} kills (${byTarget}), ${r.builds} builds (${states}; ${r.refused} refused), ${r.lost.length} lost, ${r.doubled.length} doubled, ${r.leftovers.length} leftovers, ${r.violations.length} other violations`;
}

/** Everything a report says, for the console and RESULTS-chaos.md. */
export function details(rep: ChaosReport): string {
  const out: string[] = [];
  for (const r of rep.stacks) {
    out.push(stackLine(r));
    for (const l of r.lost) out.push(`  LOST ${r.name} build ${l.id ?? '-'} (${l.key}): ${l.why}`);
    for (const d of r.doubled) out.push(`  DOUBLED ${r.name}: ${d}`);
    for (const d of r.leftovers) out.push(`  LEFTOVER ${r.name}: ${d}`);
    for (const v of r.violations) out.push(`  VIOLATION ${r.name}: ${v}`);
    for (const n of r.notes) out.push(`  note ${r.name}: ${n}`);
  }
  return out.join('\n');
}

/** Containers of this run's real builds (their image carries the run's label) still there: reported, then removed. */
async function containersOf(runId: string): Promise<string[]> {
  const r = await run(
    'docker',
    ['ps', '-a', '--filter', `label=io.kiln.chaos.run=${runId}`, '--format', '{{.ID}} {{.Image}} {{.Status}}'],
    { timeoutMs: 60_000 },
  );
  const lines = r.stdout.split('\n').filter(Boolean);
  if (lines.length) await run('docker', ['rm', '-f', ...lines.map((l) => l.split(' ')[0]!)], { timeoutMs: 120_000 });
  return lines.map((l) => `container left: ${l}`);
}

/** The images this run's real builds made (labelled with the run id): removed, so runs do not pile them up. */
async function removeImagesOf(runId: string): Promise<void> {
  const ids = (
    await run('docker', ['images', '-q', '--filter', `label=io.kiln.chaos.run=${runId}`], { timeoutMs: 60_000 })
  ).stdout
    .split('\n')
    .filter(Boolean);
  if (ids.length) await run('docker', ['rmi', '-f', ...new Set(ids)], { timeoutMs: 120_000 });
}
