import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { descendants, readProc, signalIfSame, type Proc } from './procs.js';

/** How a long-lived part is started: argv, environment (on top of nothing: the part gets only this) and cwd. */
export interface PartCommand {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Printed when the part is ready; group 1, when present, is its URL. */
  ready: RegExp;
  /**
   * Helper processes of the part's runtime, not of the system it stands for (tsx's esbuild service under the Jenkins
   * double): killed with the part, else an orphan outlives the kill and counts as a leftover of the run.
   */
  runtimeHelper?: (p: Proc) => boolean;
}

/** Every part's process still running, and other last-resort clean-ups: run if the harness itself dies. */
const live = new Set<ChildProcess>();
const lastResort: Array<() => void> = [];
let hooked = false;
/** Registers a synchronous clean-up for the case where the harness exits without stopping its stacks. */
export function onHarnessExit(fn: () => void): void {
  lastResort.push(fn);
  hookExit();
}
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
    for (const fn of lastResort)
      try {
        fn();
      } catch {
        /* best effort */
      }
  });
}

/**
 * A long-lived process of a stack (kiln serve, kiln web, kiln glue-server, the Jenkins double): started by this
 * harness, so it may be killed by it. Its output goes to a log file (for excerpts in the report) and a short
 * in-memory tail. Killing is SIGKILL of exactly the PID this object spawned, checked against its start time.
 */
export class Part {
  child?: ChildProcess;
  proc?: Proc;
  url = '';
  starts = 0;
  private tail = '';

  constructor(
    readonly name: string,
    private readonly command: () => PartCommand,
    readonly logFile: string,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the part and waits until it prints its ready line; throws with its output if it exits first. */
  async start(): Promise<void> {
    const c = this.command();
    this.starts++;
    appendFileSync(
      this.logFile,
      `\n===== ${new Date().toISOString()} start #${this.starts}: ${c.file} ${c.args.join(' ')}\n`,
    );
    let out = '';
    const child = spawn(c.file, c.args, { cwd: c.cwd, env: c.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    hookExit();
    live.add(child);
    child.once('exit', () => live.delete(child));
    const onData = (b: Buffer) => {
      const s = b.toString();
      out += s;
      if (out.length > 65536) out = out.slice(-32768);
      this.tail = (this.tail + s).slice(-32768);
      appendFileSync(this.logFile, s);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, sig) =>
      appendFileSync(this.logFile, `\n===== ${new Date().toISOString()} exit code=${code} signal=${sig}\n`),
    );
    // A part that never says it is ready fails the run; 3 minutes is far beyond any start seen on a loaded machine.
    const deadline = Date.now() + 180_000;
    let failedAt: number | undefined;
    for (;;) {
      const m = c.ready.exec(out);
      if (m) {
        this.url = m[1] ?? '';
        break;
      }
      // `kiln: <error>` is kiln's last word on a failed start: it should exit right after; say so if it does not.
      if (failedAt === undefined && /^kiln: /m.test(out)) failedAt = Date.now();
      const hung = failedAt !== undefined && Date.now() - failedAt > 10_000;
      if (child.exitCode !== null || child.signalCode !== null || hung || Date.now() > deadline) {
        const how =
          child.exitCode !== null || child.signalCode !== null
            ? `exit ${child.exitCode ?? child.signalCode}`
            : hung
              ? 'it printed its error but was still running 10 s later (killed)'
              : 'no ready line after 3 min (killed)';
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        throw new Error(`${this.name} did not start (${how}):\n${out.slice(-4000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.proc = readProc(child.pid!);
  }

  /** SIGKILL of this part's own process (never its process group: what it started lives on, as after a crash). */
  async kill(): Promise<boolean> {
    const child = this.child;
    if (!child || !this.running) return false;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const isHelper = this.command().runtimeHelper;
    const helpers = isHelper && child.pid ? descendants(child.pid).filter(isHelper) : [];
    appendFileSync(this.logFile, `\n===== ${new Date().toISOString()} chaos: SIGKILL\n`);
    child.kill('SIGKILL');
    await exited;
    for (const h of helpers) signalIfSame(h, 'SIGKILL');
    return true;
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 30_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(t);
  }

  /** The last lines it printed, for a failure report. */
  excerpt(lines = 30): string {
    return this.tail.split('\n').slice(-lines).join('\n');
  }
}
