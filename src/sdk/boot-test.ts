import { promises as fsp } from 'node:fs';
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
 * Boots an image in QEMU with the serial console on stdout and passes as soon as `login:` appears. The disk is
 * attached with -snapshot, so the artifact's bytes (and its checksum) do not change. QEMU is always killed
 * afterwards (abort on success, the subprocess timeout otherwise).
 */
export async function bootTest(o: BootTestOptions): Promise<BootTestResult> {
  const firmware = o.firmware ?? 'bios';
  const args = [
    '-accel',
    o.accel,
    '-m',
    String(o.memoryMb ?? 1024),
    '-smp',
    '2',
    '-nographic',
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
  const t0 = Date.now();
  const r = await run('qemu-system-x86_64', args, {
    timeoutMs: o.timeoutSeconds * 1000,
    maxOutputBytes: 64 * 1024,
    signal: ac.signal,
    onOutput: (c) => {
      const s = c.toString('utf8');
      text += s;
      if (text.length > 4 * 1024 * 1024) text = text.slice(-2 * 1024 * 1024);
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
    },
  });
  if (graceTimer) clearTimeout(graceTimer);
  o.signal?.removeEventListener('abort', onAbort);
  const seconds = Math.round((Date.now() - t0) / 100) / 10;
  await fsp.writeFile(o.serialLogFile, text);
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
