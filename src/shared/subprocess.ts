import { spawn, type SpawnOptions } from 'node:child_process';
import { KilnError } from './errors.js';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Milliseconds before SIGTERM, then SIGKILL 5 s later. Required: no subprocess runs unbounded. */
  timeoutMs: number;
  input?: string | Buffer;
  /** Cap on captured stdout/stderr each; the rest is dropped (the tail is kept). */
  maxOutputBytes?: number;
  /** Called with every chunk of combined output, for live logs. */
  onOutput?: (chunk: Buffer) => void;
  signal?: AbortSignal;
  /**
   * Run in a new process group and send timeout/abort signals to the whole group, so grandchildren (docker, qemu)
   * stop with it. The caller may also signal the group itself with `process.kill(-pid, sig)`.
   */
  processGroup?: boolean;
  /** Called once with the child's pid (the process group id when `processGroup` is set). */
  onSpawn?: (pid: number) => void;
  /** Open file descriptors the child inherits as its fds 3, 4, ... (to act on a file without naming its path). */
  inheritFds?: readonly number[];
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

/**
 * Runs a program with an argv array: never a shell, so no argument is ever interpreted. Resolves with the exit
 * status whatever it is; use `runChecked` to turn a non-zero exit into a KilnError.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const max = opts.maxOutputBytes ?? 1 << 20;
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe', ...(opts.inheritFds ?? [])],
      shell: false,
      detached: opts.processGroup === true,
    };
    const child = spawn(cmd, [...args], spawnOpts);
    if (child.pid !== undefined) opts.onSpawn?.(child.pid);
    const signalChild = (sig: NodeJS.Signals) => {
      if (opts.processGroup && child.pid !== undefined) {
        try {
          process.kill(-child.pid, sig);
        } catch {
          /* group already gone */
        }
      } else {
        child.kill(sig);
      }
    };
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timedOut = false;
    const keep = (buf: Buffer[], chunk: Buffer, len: number): number => {
      buf.push(chunk);
      len += chunk.length;
      while (len > max && buf.length > 1) len -= buf.shift()!.length;
      return len;
    };
    child.stdout!.on('data', (c: Buffer) => {
      outLen = keep(out, c, outLen);
      opts.onOutput?.(c);
    });
    child.stderr!.on('data', (c: Buffer) => {
      errLen = keep(err, c, errLen);
      opts.onOutput?.(c);
    });
    let killTimer: NodeJS.Timeout | undefined;
    const stop = () => {
      signalChild('SIGTERM');
      killTimer = setTimeout(() => signalChild('SIGKILL'), 5000);
      killTimer.unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
    const onAbort = () => stop();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // Aborted before it started (or in onSpawn): no event will come, and it must not run to its end.
    if (opts.signal?.aborted) stop();
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new KilnError('internal', `Could not start ${cmd}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({
        code,
        signal,
        timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        durationMs: Date.now() - started,
      });
    });
    child.stdin!.on('error', () => {
      /* child may exit before reading its input */
    });
    child.stdin!.end(opts.input ?? '');
  });
}

/** Like `run`, but a timeout or non-zero exit becomes a KilnError naming the program (details in `detail`). */
export async function runChecked(cmd: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.timedOut)
    throw new KilnError('timeout', `${cmd} timed out after ${Math.round(opts.timeoutMs / 1000)} s`, {
      detail: r.stderr.slice(-4000),
    });
  if (r.code !== 0) {
    throw new KilnError('internal', `${cmd} failed (exit ${r.code ?? r.signal})`, {
      detail: { args, stderr: r.stderr.slice(-4000) },
    });
  }
  return r;
}
