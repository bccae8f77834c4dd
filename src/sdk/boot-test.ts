import { promises as fsp } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { run } from '../shared/subprocess.js';
import type { BootTestResult } from '../protocol/sdk-output.js';
import { explain, stripAnsi, TERMINAL_PATTERNS } from './boot-diagnosis.js';
import { explainMissingTexts, missingTexts, type ConsoleExpectation } from './expect-console.js';

/** What one boot test reports, as result.json carries it (src/protocol/sdk-output.ts). */
export type { BootTestResult } from '../protocol/sdk-output.js';

export interface BootTestOptions {
  image: string;
  artifact: string;
  format: 'raw' | 'qcow2';
  /** cdrom: the image is an ISO, attached read-only as a CD and booted from it. */
  media?: 'disk' | 'cdrom';
  accel: 'tcg' | 'kvm';
  timeoutSeconds: number;
  /** Where the whole serial log is kept. */
  serialLogFile: string;
  firmware?: 'bios' | 'uefi';
  /** OVMF code image for UEFI. */
  ovmfCode?: string;
  ovmfVars?: string;
  memoryMb?: number;
  /** More console text that must appear (e.g. the image's application service starting) before the test passes. */
  expect?: RegExp[];
  /** Literal text the console must show before the test passes (--expect-console, LABEL io.kiln.expect-console). */
  expectText?: ConsoleExpectation[];
  /** Console text that fails the test at once (e.g. the application's unit is broken). */
  failOn?: RegExp[];
  /** Once `login:` shows, how long to wait for the `expect` patterns before failing. */
  expectGraceSeconds?: number;
  /** Keep reading the console this long after passing, so late lines land in the serial log. */
  lingerMs?: number;
  onLine?: (line: string) => void;
  signal?: AbortSignal;
}

export const LOGIN_PROMPT = /login:/;
const SERIAL_TAIL = 16 * 1024;
const MAX_SERIAL_BYTES = 64 * 2 ** 20;
/** How often the console file is read while QEMU runs: what a waiting line costs, not a correctness bound. */
const SERIAL_POLL_MS = 100;

/** Whether the console (colours stripped) has shown everything `expect` and `expectText` ask for. */
const allSeen = (o: BootTestOptions, clean: string) =>
  (o.expect ?? []).every((re) => re.test(clean)) && !missingTexts(clean, o.expectText).length;

/**
 * What of `expect` and `expectText` the console (colours stripped) has not shown, to follow "login prompt seen, but "
 * (`within`: "within 60 s"); undefined when it showed everything.
 */
function notSeen(o: BootTestOptions, clean: string, within: string): string | undefined {
  const patterns = (o.expect ?? []).filter((re) => !re.test(clean));
  const texts = missingTexts(clean, o.expectText);
  const parts: string[] = [];
  if (patterns.length) parts.push(`not ${patterns.map(String).join(', ')} ${within}`);
  if (texts.length) parts.push(`${patterns.length ? '' : `${within} `}${explainMissingTexts(clean, texts)}`);
  return parts.length ? parts.join('; and ') : undefined;
}

/**
 * Boots an image in QEMU and passes as soon as `login:` appears on its serial console. The disk is attached with
 * -snapshot, so the artifact's bytes (and its checksum) do not change. QEMU is always killed afterwards (abort on
 * success, the subprocess timeout otherwise).
 *
 * The console goes to a file, not a pipe: QEMU's 16550 drops a byte after a few failed writes, so a pipe whose
 * reader falls behind (a loaded host) loses console text, and a file write never fails that way. The file is read
 * as it grows; a console that floods past MAX_SERIAL_BYTES fails the test rather than fill the disk.
 */
export async function bootTest(o: BootTestOptions): Promise<BootTestResult> {
  const firmware = o.firmware ?? 'bios';
  // QEMU opens the log through the descriptor it inherits (fd 3), so no path is written into its option syntax.
  const log = await fsp.open(o.serialLogFile, 'w+', 0o644);
  const args = [
    '-accel',
    o.accel,
    '-m',
    String(o.memoryMb ?? 1024),
    '-smp',
    '2',
    '-display',
    'none',
    '-monitor',
    'none',
    '-parallel',
    'none',
    '-chardev',
    'file,id=console,path=/dev/fd/3',
    '-serial',
    'chardev:console',
    '-no-reboot',
    '-snapshot',
    ...(o.media === 'cdrom'
      ? ['-drive', `file=${o.image},format=raw,media=cdrom,readonly=on`, '-boot', 'd']
      : ['-drive', `file=${o.image},format=${o.format},if=virtio`]),
  ];
  if (firmware === 'uefi' && o.ovmfCode) {
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${o.ovmfCode}`);
    if (o.ovmfVars) args.push('-drive', `if=pflash,format=raw,unit=1,file=${o.ovmfVars}`);
  }
  const ac = new AbortController();
  let text = '';
  let passed = false;
  let failure: string | undefined;
  let graceTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    failure = 'cancelled';
    ac.abort();
  };
  o.signal?.addEventListener('abort', onAbort, { once: true });
  let partial = '';
  let trimmed = false;
  const decoder = new StringDecoder('utf8');
  const onText = (s: string) => {
    text += s;
    if (text.length > 4 * 1024 * 1024) {
      text = text.slice(-2 * 1024 * 1024);
      trimmed = true;
    }
    partial += s;
    const nl = partial.lastIndexOf('\n');
    if (nl >= 0) {
      for (const l of partial.slice(0, nl).split('\n')) o.onLine?.(l);
      partial = partial.slice(nl + 1);
    }
    if (passed || failure) return;
    const clean = stripAnsi(text);
    const bad = (o.failOn ?? []).find((re) => re.test(clean));
    if (bad) {
      failure = `the console showed ${(bad.exec(clean)?.[0] ?? '').slice(0, 200)}`;
      ac.abort();
      return;
    }
    // A kernel panic, the initramfs shell or emergency mode will not turn into a login prompt: stop now.
    const dead = TERMINAL_PATTERNS.find((re) => re.test(clean));
    if (dead) {
      failure = 'the boot reached a dead end';
      ac.abort();
      return;
    }
    if (!LOGIN_PROMPT.test(text)) return;
    if (allSeen(o, clean)) {
      passed = true;
      setTimeout(() => ac.abort(), o.lingerMs ?? 0).unref();
    } else if (!graceTimer) {
      const grace = o.expectGraceSeconds ?? 60;
      graceTimer = setTimeout(() => {
        failure = `login prompt seen, but ${notSeen(o, stripAnsi(text), `within ${grace} s`) ?? 'it stopped'}`;
        ac.abort();
      }, grace * 1000);
      graceTimer.unref();
    }
  };
  let offset = 0;
  const chunk = Buffer.alloc(256 * 1024);
  const readNew = async () => {
    for (;;) {
      const { bytesRead } = await log.read(chunk, 0, chunk.length, offset);
      if (!bytesRead) return;
      offset += bytesRead;
      if (offset > MAX_SERIAL_BYTES && !failure && !passed) {
        failure = `the console printed more than ${MAX_SERIAL_BYTES / 2 ** 20} MiB`;
        ac.abort();
      }
      onText(decoder.write(chunk.subarray(0, bytesRead)));
    }
  };
  const t0 = Date.now();
  let r: Awaited<ReturnType<typeof run>>;
  try {
    const qemu = run('qemu-system-x86_64', args, {
      timeoutMs: o.timeoutSeconds * 1000,
      maxOutputBytes: 64 * 1024,
      signal: ac.signal,
      inheritFds: [log.fd],
    });
    let exited = false;
    void qemu.finally(() => (exited = true)).catch(() => undefined);
    while (!exited) {
      await readNew();
      await new Promise((res) => setTimeout(res, SERIAL_POLL_MS));
    }
    r = await qemu;
    await readNew();
    onText(decoder.end());
  } finally {
    await log.close();
  }
  if (graceTimer) clearTimeout(graceTimer);
  o.signal?.removeEventListener('abort', onAbort);
  const seconds = Math.round((Date.now() - t0) / 100) / 10;
  // The log keeps what `text` keeps: a flooding console's tail, not all of it.
  if (trimmed) await fsp.writeFile(o.serialLogFile, text);
  const tail = text.length > SERIAL_TAIL ? text.slice(-SERIAL_TAIL) : text;
  if (passed) return { artifact: o.artifact, firmware, passed, seconds, serialLog: tail };
  let reason: string;
  const clean = stripAnsi(text);
  const missing = notSeen(o, clean, `within ${o.timeoutSeconds} s`);
  if (failure) reason = failure;
  else if (r.timedOut && LOGIN_PROMPT.test(text) && missing) reason = `login prompt seen, but ${missing}`;
  else if (r.timedOut) reason = `no login prompt on the serial console within ${o.timeoutSeconds} s`;
  else reason = `QEMU exited (${r.code ?? r.signal}) before a login prompt: ${r.stderr.trim().slice(-300)}`;
  // Say why, when the console tells (not for a cancel, and not when the login prompt came and only the app failed).
  const why = failure === 'cancelled' || LOGIN_PROMPT.test(text) ? undefined : explain(text);
  if (why) reason = `${reason}: ${why}`;
  // A boot that failed before its login prompt still names the text it was waiting for.
  const texts = missingTexts(clean, o.expectText);
  if (texts.length && !LOGIN_PROMPT.test(text) && failure !== 'cancelled')
    reason = `${reason}; and ${explainMissingTexts(clean, texts)}`;
  return { artifact: o.artifact, firmware, passed: false, seconds, reason, serialLog: tail };
}
