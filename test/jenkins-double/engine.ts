import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { parseConfig, serialiseConfig, withDisabled, type JobConfig } from './config-xml.js';

/**
 * The double's Jenkins model: jobs, the queue, executors and builds (JENKINS-REST.md §6, §7, §4). Everything that
 * survives a Jenkins restart is written to `dataDir` synchronously on each change; a crash() loses only what is
 * in memory, so a restart sees what a hard-restarted Jenkins sees: running builds end ABORTED, queued items return.
 */

export interface Param {
  name: string;
  value: string;
}
export interface Cause {
  _class: string;
  shortDescription: string;
  userId?: string;
  userName?: string;
}

export interface QueueItem {
  id: number;
  job: string; // lower-case key
  params: Param[] | null;
  causes: Cause[];
  inQueueSince: number;
  dueAt: number;
  state: 'waiting' | 'blocked' | 'buildable' | 'left';
  cancelled: boolean;
  executable: number | null;
  leftAt: number | null;
  /** Why a buildable item cannot start (e.g. no node has its label). */
  stuckWhy?: string;
}

export interface Build {
  number: number;
  queueId: number;
  params: Param[] | null;
  causes: Cause[];
  timestamp: number;
  duration: number;
  result: 'SUCCESS' | 'UNSTABLE' | 'FAILURE' | 'NOT_BUILT' | 'ABORTED' | null;
  state: 'BUILDING' | 'POST_PRODUCTION' | 'COMPLETED';
  artifacts: string[];
  /** "Keep this build forever" (Run.keepLog, toggled by POST toggleLogKeep): LogRotator skips it. */
  keepLog?: boolean;
}

export interface Job {
  name: string;
  config: JobConfig;
  nextBuildNumber: number;
  builds: Build[]; // newest first
}

export interface EngineOptions {
  dataDir: string;
  executors: number;
  quietPeriodSeconds: number;
  leftItemTtlMs: number;
  /** Time between an item leaving the queue and its build existing (§6.4): the window pollers must survive. */
  startDelayMs: number;
  tickMs: number;
  /** Labels of the double's one node; when set, jobs whose label expression they do not satisfy stay queued. */
  labels?: string[];
  /** Name of that node (NODE_NAME, the log's "Building remotely on"). */
  nodeName?: string;
  /** The clock LogRotator's day limits are measured with (tests move it instead of waiting days). */
  now?: () => number;
}

/** Evaluates a Jenkins label expression (names, !, &&, ||, parentheses) against a node's labels. */
export function labelMatches(expr: string | null, labels: readonly string[]): boolean {
  if (expr === null || !expr.trim()) return true;
  const tokens = expr.match(/&&|\|\||!|\(|\)|[A-Za-z0-9_.:-]+/g) ?? [];
  let i = 0;
  const or = (): boolean => {
    let v = and();
    while (tokens[i] === '||') {
      i++;
      const r = and();
      v = v || r;
    }
    return v;
  };
  const and = (): boolean => {
    let v = not();
    while (tokens[i] === '&&') {
      i++;
      const r = not();
      v = v && r;
    }
    return v;
  };
  const not = (): boolean => {
    const t = tokens[i++];
    if (t === '!') return !not();
    if (t === '(') {
      const v = or();
      i++;
      return v;
    }
    return t !== undefined && labels.includes(t);
  };
  return or();
}

/** SIGTERM to a step's process group, SIGKILL after 5 s if any of it is left; resolves when the group is gone. */
async function killTree(pgid: number | undefined): Promise<void> {
  if (!pgid) return;
  const signal = (sig: NodeJS.Signals | 0): boolean => {
    try {
      process.kill(-pgid, sig);
      return true;
    } catch {
      return false;
    } // false: the group is gone
  };
  if (!signal('SIGTERM')) return;
  const deadline = Date.now() + 5000;
  while (signal(0)) {
    if (Date.now() > deadline) {
      signal('SIGKILL');
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

const RANK: Record<string, number> = { SUCCESS: 0, UNSTABLE: 1, FAILURE: 2, NOT_BUILT: 3, ABORTED: 4 };
const worse = (a: Build['result'], b: NonNullable<Build['result']>) => (a === null || RANK[b]! > RANK[a]! ? b : a);

/** Ant-style glob (`**`, `*`, `?`) to a RegExp over `/`-separated relative paths. */
function antGlob(p: string): RegExp {
  let re = '';
  const s = p.trim().replace(/\\/g, '/').replace(/\/$/, '/**');
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '*' && s[i + 1] === '*') {
      if (s[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

function walk(root: string, rel = ''): string[] {
  let out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(path.join(root, rel));
  } catch {
    return out;
  }
  for (const e of entries.sort()) {
    const r = rel ? `${rel}/${e}` : e;
    const st = lstatSync(path.join(root, r));
    if (st.isSymbolicLink()) continue; // followSymlinks=false: never archive what a link points at
    if (st.isDirectory()) out = out.concat(walk(root, r));
    else if (st.isFile()) out.push(r);
  }
  return out;
}

export class Engine {
  readonly jobs = new Map<string, Job>(); // key: lower-case name (§2.7: top-level names are case-insensitive)
  queue: QueueItem[] = [];
  nextQueueId = 1;
  private running = new Map<string, { child?: ChildProcess; abortedBy?: string; starting: boolean }>(); // key job#n
  private dead = false;
  private timer: NodeJS.Timeout;
  private scriptSeq = 0;

  constructor(readonly opts: EngineOptions) {
    mkdirSync(path.join(opts.dataDir, 'jobs'), { recursive: true });
    this.load();
    this.timer = setInterval(() => this.tick(), opts.tickMs);
    this.timer.unref();
  }

  // ------------------------------------------------------------------------------------------- persistence
  private statePath() {
    return path.join(this.opts.dataDir, 'state.json');
  }
  jobDir(name: string) {
    return path.join(this.opts.dataDir, 'jobs', name);
  }
  buildDir(name: string, n: number) {
    return path.join(this.jobDir(name), 'builds', String(n));
  }
  logPath(name: string, n: number) {
    return path.join(this.buildDir(name, n), 'log');
  }
  archiveDir(name: string, n: number) {
    return path.join(this.buildDir(name, n), 'archive');
  }

  persist(): void {
    if (this.dead) return;
    const state = {
      nextQueueId: this.nextQueueId,
      queue: this.queue.filter((q) => q.state !== 'left'),
      jobs: [...this.jobs.values()].map((j) => ({
        name: j.name,
        nextBuildNumber: j.nextBuildNumber,
        builds: j.builds,
      })),
    };
    const tmp = `${this.statePath()}.tmp`;
    writeFileSync(tmp, JSON.stringify(state));
    renameSync(tmp, this.statePath());
  }

  private load(): void {
    if (!existsSync(this.statePath())) return;
    const state = JSON.parse(readFileSync(this.statePath(), 'utf8')) as {
      nextQueueId: number;
      queue: QueueItem[];
      jobs: Array<{ name: string; nextBuildNumber: number; builds: Build[] }>;
    };
    this.nextQueueId = state.nextQueueId;
    for (const j of state.jobs) {
      let config: JobConfig;
      try {
        config = parseConfig(readFileSync(path.join(this.jobDir(j.name), 'config.xml'), 'utf8'));
      } catch {
        continue;
      }
      for (const b of j.builds) {
        // A build cut off by a hard restart: its executor is gone, so it ends ABORTED (JENKINS-REST.md, SECURITY-CHECKLIST 5.1).
        if (b.state !== 'COMPLETED') {
          b.result = 'ABORTED';
          b.state = 'COMPLETED';
          b.duration = Math.max(0, Date.now() - b.timestamp);
        }
      }
      this.jobs.set(j.name.toLowerCase(), {
        name: j.name,
        config,
        nextBuildNumber: j.nextBuildNumber,
        builds: j.builds,
      });
    }
    // Queued items come back after a restart (Jenkins saves queue.xml); their quiet period restarts.
    this.queue = state.queue
      .filter((q) => this.jobs.has(q.job))
      .map((q) => ({ ...q, state: 'waiting', dueAt: Math.max(q.dueAt, Date.now()) }));
    this.persist();
  }

  /** Hard stop: kill every build process group and stop writing anything. */
  crash(): void {
    this.dead = true;
    clearInterval(this.timer);
    for (const r of this.running.values()) {
      if (r.child?.pid) {
        try {
          process.kill(-r.child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------------- jobs
  getJob(name: string): Job | undefined {
    return this.jobs.get(name.toLowerCase());
  }

  createJob(name: string, xml: string): void {
    const config = parseConfig(xml);
    mkdirSync(this.jobDir(name), { recursive: true });
    writeFileSync(path.join(this.jobDir(name), 'config.xml'), serialiseConfig(config));
    this.jobs.set(name.toLowerCase(), { name, config, nextBuildNumber: 1, builds: [] });
    this.persist();
  }

  updateConfig(job: Job, xml: string): void {
    const config = parseConfig(xml);
    this.setConfig(job, config);
  }

  private setConfig(job: Job, config: JobConfig): void {
    const wasDisabled = job.config.disabled;
    job.config = config;
    writeFileSync(path.join(this.jobDir(job.name), 'config.xml'), serialiseConfig(config));
    if (config.disabled && !wasDisabled) this.cancelJobQueue(job);
    this.persist();
  }

  setDisabled(job: Job, disabled: boolean): void {
    if (job.config.disabled === disabled) return; // makeDisabled returns early (§3.8)
    this.setConfig(job, withDisabled(job.config, disabled));
  }

  deleteJob(job: Job, user: string): void {
    this.cancelJobQueue(job);
    for (const b of job.builds) if (b.state !== 'COMPLETED') this.stop(job, b, user);
    this.jobs.delete(job.name.toLowerCase());
    this.persist();
    rmSync(this.jobDir(job.name), { recursive: true, force: true });
  }

  private cancelJobQueue(job: Job): void {
    for (const q of this.queue) if (q.job === job.name.toLowerCase() && q.state !== 'left') this.leave(q, true);
  }

  isBuilding(job: Job): boolean {
    return (
      job.builds.some((b) => b.state !== 'COMPLETED') ||
      [...this.running.entries()].some(([k, r]) => r.starting && k.startsWith(`${job.name.toLowerCase()}#`))
    );
  }

  // ------------------------------------------------------------------------------------------------ queue
  /**
   * Queue.schedule2 (§3.10.5, §3.11.4, §6.2): an item for the same job with the same parameters that is still
   * queued absorbs the request (its due time moves to the earlier one, causes merge) and `created` is false.
   */
  schedule(
    job: Job,
    params: Param[] | null,
    cause: Cause,
    delayMs: number,
  ): { item: QueueItem; created: boolean } | null {
    if (job.config.disabled) return null;
    const key = job.name.toLowerCase();
    const now = Date.now();
    const same = (a: Param[] | null, b: Param[] | null) => JSON.stringify(a) === JSON.stringify(b);
    const existing = this.queue.find((q) => q.job === key && q.state !== 'left' && same(q.params, params));
    if (existing) {
      existing.dueAt = Math.min(existing.dueAt, now + delayMs);
      existing.causes.push(cause);
      this.persist();
      return { item: existing, created: false };
    }
    const item: QueueItem = {
      id: this.nextQueueId++,
      job: key,
      params,
      causes: [cause],
      inQueueSince: now,
      dueAt: now + delayMs,
      state: 'waiting',
      cancelled: false,
      executable: null,
      leftAt: null,
    };
    this.queue.push(item);
    this.persist();
    setImmediate(() => this.tick());
    return { item, created: true };
  }

  quietPeriodMs(job: Job): number {
    return (job.config.quietPeriod ?? this.opts.quietPeriodSeconds) * 1000;
  }

  getItem(id: number): QueueItem | undefined {
    const q = this.queue.find((i) => i.id === id);
    if (q && q.state === 'left' && q.leftAt !== null && Date.now() - q.leftAt > this.opts.leftItemTtlMs)
      return undefined;
    return q;
  }

  /** Cancels a queued item; a LeftItem (already started or cancelled) is left alone. */
  cancelItem(q: QueueItem): boolean {
    if (q.state === 'left') return false;
    this.leave(q, true);
    return true;
  }

  private leave(q: QueueItem, cancelled: boolean): void {
    q.state = 'left';
    q.cancelled = cancelled;
    q.leftAt = Date.now();
    this.persist();
  }

  tick(): void {
    if (this.dead) return;
    const now = Date.now();
    this.queue = this.queue.filter(
      (q) => !(q.state === 'left' && q.leftAt !== null && now - q.leftAt > this.opts.leftItemTtlMs),
    );
    for (const q of this.queue) {
      if (q.state === 'left') continue;
      const job = this.jobs.get(q.job);
      if (!job) {
        this.leave(q, true);
        continue;
      }
      if (q.state === 'waiting' && q.dueAt > now) continue;
      const blocked = !job.config.concurrentBuild && this.isBuilding(job);
      q.state = blocked ? 'blocked' : 'buildable';
    }
    for (const q of this.queue) {
      if (q.state !== 'buildable') continue;
      const job = this.jobs.get(q.job)!;
      if (this.opts.labels && !labelMatches(job.config.label, this.opts.labels)) {
        q.stuckWhy = `There are no nodes with the label ‘${job.config.label ?? ''}’`;
        continue;
      }
      q.stuckWhy = undefined;
      if (this.running.size >= this.opts.executors) break;
      if (!job.config.concurrentBuild && this.isBuilding(job)) {
        q.state = 'blocked';
        continue;
      }
      this.startItem(job, q);
    }
  }

  private startItem(job: Job, q: QueueItem): void {
    const slot = `${job.name.toLowerCase()}#q${q.id}`;
    this.running.set(slot, { starting: true });
    this.leave(q, false);
    // §6.4: the item is a LeftItem with executable null until the executor has created the Run.
    setTimeout(() => {
      this.running.delete(slot);
      if (this.dead) return;
      const current = this.jobs.get(job.name.toLowerCase());
      if (current !== job) return;
      const build: Build = {
        number: job.nextBuildNumber++,
        queueId: q.id,
        params: q.params,
        causes: q.causes,
        timestamp: Date.now(),
        duration: 0,
        result: null,
        state: 'BUILDING',
        artifacts: [],
      };
      job.builds.unshift(build);
      q.executable = build.number;
      mkdirSync(this.buildDir(job.name, build.number), { recursive: true });
      this.persist();
      void this.run(job, build);
    }, this.opts.startDelayMs);
  }

  // ----------------------------------------------------------------------------------------------- builds
  stop(job: Job, build: Build, user: string): void {
    const r = this.running.get(`${job.name.toLowerCase()}#${build.number}`);
    if (!r || build.state !== 'BUILDING') return;
    r.abortedBy = user;
    if (r.child?.pid) {
      const pid = r.child.pid;
      try {
        process.kill(-pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      setTimeout(() => {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 3000).unref();
    }
  }

  private env(job: Job, build: Build, ws: string, baseUrl: string): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      BUILD_NUMBER: String(build.number),
      BUILD_ID: String(build.number),
      BUILD_DISPLAY_NAME: `#${build.number}`,
      JOB_NAME: job.name,
      JOB_BASE_NAME: job.name,
      BUILD_TAG: `jenkins-${job.name}-${build.number}`,
      WORKSPACE: ws,
      JENKINS_URL: baseUrl,
      BUILD_URL: `${baseUrl}job/${encodeURIComponent(job.name)}/${build.number}/`,
      JOB_URL: `${baseUrl}job/${encodeURIComponent(job.name)}/`,
      NODE_NAME: this.opts.nodeName ?? 'built-in',
      NODE_LABELS: (this.opts.labels ?? ['built-in']).join(' '),
      EXECUTOR_NUMBER: '0',
    };
    // §7: a string parameter is exported under its name and an upper-cased copy.
    for (const p of build.params ?? []) {
      env[p.name] = p.value;
      env[p.name.toUpperCase()] = p.value;
    }
    return env;
  }

  baseUrl = 'http://127.0.0.1/';

  private async run(job: Job, build: Build): Promise<void> {
    const key = `${job.name.toLowerCase()}#${build.number}`;
    const r: { child?: ChildProcess; abortedBy?: string; starting: boolean } = { starting: false };
    this.running.set(key, r);
    const logFd = openSync(this.logPath(job.name, build.number), 'a');
    const log = (s: string) => {
      if (!this.dead) writeSync(logFd, s);
    };
    try {
      const ws = path.join(this.opts.dataDir, 'workspace', job.name);
      mkdirSync(ws, { recursive: true });
      for (const c of build.causes) log(`${c.shortDescription}\n`);
      log('Running as SYSTEM\n');
      const node = this.opts.nodeName ?? 'built-in';
      log(
        node === 'built-in'
          ? `Building in workspace ${ws}\n`
          : `Building remotely on ${node} (${(this.opts.labels ?? []).join(' ')}) in workspace ${ws}\n`,
      );
      let result: Build['result'] = null;
      for (const b of job.config.builders) {
        if (r.abortedBy) break;
        const tmpDir = path.join(this.opts.dataDir, 'tmp');
        mkdirSync(tmpDir, { recursive: true });
        const script = path.join(tmpDir, `jenkins${process.pid}${++this.scriptSeq}.sh`);
        writeFileSync(script, b.command);
        let argv = ['/bin/sh', '-xe', script];
        if (b.command.startsWith('#!')) argv = [...b.command.slice(2).split('\n')[0]!.trim().split(/\s+/), script];
        log(`[${path.basename(ws)}] $ ${argv.join(' ')}\n`);
        const code = await new Promise<number | null>((resolve) => {
          const child = spawn(argv[0]!, argv.slice(1), {
            cwd: ws,
            env: this.env(job, build, ws, this.baseUrl),
            detached: true,
            stdio: ['ignore', logFd, logFd],
          });
          r.child = child;
          child.on('error', () => resolve(127));
          child.on('exit', (c, sig) => {
            // Jenkins' ProcessTreeKiller: what a step leaves running when it ends (children of a killed shell, a
            // daemon it started) is killed before the build ends, so it cannot write into the next build's
            // workspace: SIGTERM, then SIGKILL after SoftKillWaitSeconds (5 s by default) if still there.
            void killTree(child.pid).then(() => resolve(sig ? 128 : c));
          });
        });
        r.child = undefined;
        rmSync(script, { force: true });
        if (this.dead) return;
        if (r.abortedBy) break;
        if (code !== 0) {
          log(`Build step 'Execute shell' marked build as failure\n`);
          result = worse(result, 'FAILURE');
          break;
        }
      }
      if (r.abortedBy) {
        log(`Aborted by ${r.abortedBy}\n`);
        result = 'ABORTED';
      }
      // Deleted while running (§3.9 interrupts its builds): nothing of it may be written back.
      if (this.jobs.get(job.name.toLowerCase()) !== job) return;
      const arch = job.config.archiver;
      if (arch && !(arch.onlyIfSuccessful && result !== null && RANK[result]! > RANK.UNSTABLE!)) {
        log('Archiving artifacts\n');
        const patterns = arch.artifacts
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean)
          .map(antGlob);
        const files = walk(ws).filter((f) => patterns.some((re) => re.test(f)));
        if (files.length === 0 && !arch.allowEmpty && (result === null || result === 'SUCCESS')) {
          log(`ERROR: No artifacts found that match the file pattern "${arch.artifacts}". Configuration error?\n`);
          result = worse(result, 'FAILURE');
        }
        for (const f of files) {
          const dest = path.join(this.archiveDir(job.name, build.number), f);
          mkdirSync(path.dirname(dest), { recursive: true });
          await copyFile(path.join(ws, f), dest); // async: disk images are GBs, the API must keep answering
          if (this.dead) return;
        }
        build.artifacts = files;
      }
      if (this.dead) return;
      build.result = result ?? 'SUCCESS';
      build.duration = Math.max(1, Date.now() - build.timestamp);
      build.state = 'POST_PRODUCTION';
      this.persist();
      log(`Finished: ${build.result}\n`);
      build.state = 'COMPLETED';
      this.logRotate(job);
    } finally {
      closeSync(logFd);
      if (!this.dead) this.running.delete(key);
      setImmediate(() => this.tick());
    }
  }

  /** Run.doToggleLogKeep: flips keepLog. */
  toggleKeepLog(job: Job, build: Build): void {
    build.keepLog = !build.keepLog;
    this.persist();
  }

  /**
   * hudson.tasks.LogRotator.perform, run when a build completes (Run.execute -> Job.logRotate) and by a test for the
   * periodic pass (BackgroundGlobalBuildDiscarder): builds beyond numToKeep and older than daysToKeep are deleted,
   * those beyond artifactNumToKeep and older than artifactDaysToKeep lose their artifacts. Counted over all the
   * job's builds, newest first, a running one included; never touched: a build kept forever (keepLog), the last
   * successful and the last stable build, a build still running. -1 (or no discarder) is no limit.
   */
  logRotate(job: Job): void {
    const tree = JSON.stringify(job.config.tree);
    const limit = (field: string) => {
      const m = new RegExp(`"${field}":\\[\\{"#text":"(-?[0-9]+)"\\}\\]`).exec(tree);
      return m ? Number(m[1]) : -1;
    };
    const lastSuccessful = job.builds.find((b) => b.state === 'COMPLETED' && b.result === 'SUCCESS');
    const keep = (b: Build) => b.keepLog === true || b === lastSuccessful || b.state !== 'COMPLETED';
    const now = (this.opts.now ?? Date.now)();
    const old = (days: number) => (b: Build) => b.timestamp < now - days * 86_400_000;
    const pick = (num: number, days: number): Build[] => [
      ...(num >= 0 ? job.builds.slice(num) : []),
      ...(days >= 0 ? job.builds.filter(old(days)) : []),
    ];
    for (const b of new Set(pick(limit('numToKeep'), limit('daysToKeep')))) {
      if (keep(b)) continue;
      rmSync(this.buildDir(job.name, b.number), { recursive: true, force: true });
      job.builds = job.builds.filter((x) => x !== b);
    }
    for (const b of new Set(pick(limit('artifactNumToKeep'), limit('artifactDaysToKeep')))) {
      if (keep(b) || !job.builds.includes(b) || !b.artifacts.length) continue;
      rmSync(this.archiveDir(job.name, b.number), { recursive: true, force: true });
      b.artifacts = [];
    }
    this.persist();
  }

  /** TimerTrigger.run (§7): defaults for every parameter, no quiet period, nothing when disabled. */
  fireTimer(name: string): QueueItem | null {
    const job = this.getJob(name);
    if (!job || job.config.timerSpecs.length === 0) return null;
    const params = job.config.params.length
      ? job.config.params.map((p) => ({ name: p.name, value: p.defaultValue }))
      : null;
    return (
      this.schedule(
        job,
        params,
        { _class: 'hudson.triggers.TimerTrigger$TimerTriggerCause', shortDescription: 'Started by timer' },
        0,
      )?.item ?? null
    );
  }

  crumbSalt = createHash('sha256').update(String(Math.random())).digest('hex');
}
