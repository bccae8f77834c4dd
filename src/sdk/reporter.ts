import { createWriteStream, type WriteStream } from 'node:fs';
import { PROGRESS_PREFIX, type StageTiming } from '../protocol/sdk-output.js';

/** Lines starting with it carry one JSON progress event: {stage, percent, message?} (src/protocol/sdk-output.ts). */
export { PROGRESS_PREFIX };
export type { StageTiming };

/** Room past the cap for the SDK's own lines (the failure and its reason). */
const OWN_RESERVE = 16 * 1024;

/**
 * The SDK's voice: human log lines go to stdout and to DIR/build.log; progress events go to stdout only, one JSON
 * object per line, so whoever runs the SDK (local backend, Jenkins) can turn them into a progress bar. The log is
 * capped (sdk.logCapBytes): past the cap, `onCapExceeded` fires once (the build is aborted), a "log truncated" line
 * says so, and further output of the build is dropped; the SDK's own lines (`log`, not `output`) still go in, up to
 * a small reserve, so the log ends with why the build stopped.
 */
export class Reporter {
  private file: WriteStream | undefined;
  private written = 0;
  private reserveUsed = 0;
  private capHit = false;
  private secrets: string[] = [];
  readonly stages: StageTiming[] = [];

  constructor(
    logPath: string | undefined,
    private readonly capBytes: number,
    private readonly out: (s: string) => void = (s) => {
      process.stdout.write(s);
    },
    private readonly onCapExceeded?: () => void,
    private readonly signal?: AbortSignal,
  ) {
    if (logPath) this.file = createWriteStream(logPath, { flags: 'w', mode: 0o644 });
  }

  /** Text never to show (a build proxy's password: a RUN step can print its environment): written as `***`. */
  mask(secret: string): void {
    if (secret && !this.secrets.includes(secret))
      this.secrets = [...this.secrets, secret].sort((a, b) => b.length - a.length);
  }

  /** The SDK's own lines. */
  log(text: string): void {
    this.write(text, true);
  }

  /** Text from a build or a tool (control characters other than TAB removed; it cannot pass for the SDK's lines). */
  output(text: string): void {
    this.write(text, false);
  }

  private write(text: string, own: boolean): void {
    let clean = text
      .replace(/\r\n?/g, '\n')
      // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
      .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
      // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
    for (const s of this.secrets) clean = clean.split(s).join('***');
    const lines = clean.split('\n');
    if (lines.at(-1) === '') lines.pop();
    for (const line of lines) {
      // A build could print our own prefixes to fake progress or the SDK's lines; escape them.
      const safe = line.startsWith(PROGRESS_PREFIX) || (!own && line.startsWith('[kiln]')) ? ' ' + line : line;
      const buf = safe + '\n';
      if (this.capHit || this.written + buf.length > this.capBytes) {
        if (!this.capHit) {
          this.capHit = true;
          const msg = `[kiln] log truncated: it reached the cap of ${this.capBytes} bytes (sdk.logCapBytes); the build's further output is dropped\n`;
          this.file?.write(msg);
          this.out(msg);
          this.onCapExceeded?.();
        }
        if (!own || this.reserveUsed + buf.length > OWN_RESERVE) continue;
        this.reserveUsed += buf.length;
        this.file?.write(buf);
        this.out(buf);
        continue;
      }
      this.written += buf.length;
      this.file?.write(buf);
      this.out(buf);
    }
  }

  progress(stage: string, percent: number, message?: string): void {
    const ev: Record<string, unknown> = { stage, percent: Math.max(0, Math.min(100, Math.round(percent))) };
    if (message !== undefined)
      ev.message = this.secrets.reduce((m, s) => m.split(s).join('***'), message).slice(0, 500);
    this.out(PROGRESS_PREFIX + JSON.stringify(ev) + '\n');
  }

  get logCapHit(): boolean {
    return this.capHit;
  }

  /** Runs one named stage, logging its start and recording its duration (also when it throws). */
  async stage<T>(name: string, percent: number, message: string, fn: () => Promise<T>): Promise<T> {
    if (this.signal?.aborted) throw new Error('cancelled');
    this.progress(name, percent, message);
    this.log(`[kiln] == ${name}: ${message}`);
    const t0 = process.hrtime.bigint();
    try {
      return await fn();
    } finally {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      this.stages.push({ name, seconds: Math.round(seconds * 1000) / 1000 });
      this.log(`[kiln] == ${name} took ${seconds.toFixed(1)} s`);
    }
  }

  close(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    return new Promise((resolve) => (f ? f.end(() => resolve()) : resolve()));
  }
}
