/**
 * STOPSIGNAL as Docker parses it (moby's signal.ParseSignal): a number, or a name with or without `SIG`, any case,
 * including RTMIN+n / RTMAX-n. `docker stop` sends it to the container's main process only, waits StopTimeout
 * (10 s unless the config says otherwise) and then kills everything: systemd's KillMode=mixed does the same.
 */

const NAMES: Record<string, number> = {
  HUP: 1,
  INT: 2,
  QUIT: 3,
  ILL: 4,
  TRAP: 5,
  ABRT: 6,
  IOT: 6,
  BUS: 7,
  FPE: 8,
  KILL: 9,
  USR1: 10,
  SEGV: 11,
  USR2: 12,
  PIPE: 13,
  ALRM: 14,
  TERM: 15,
  STKFLT: 16,
  CHLD: 17,
  CLD: 17,
  CONT: 18,
  STOP: 19,
  TSTP: 20,
  TTIN: 21,
  TTOU: 22,
  URG: 23,
  XCPU: 24,
  XFSZ: 25,
  VTALRM: 26,
  PROF: 27,
  WINCH: 28,
  IO: 29,
  POLL: 29,
  PWR: 30,
  SYS: 31,
};
const RTMIN = 34;
const RTMAX = 64;
export const DEFAULT_STOP_TIMEOUT_SECONDS = 10;

export interface StopSignal {
  number: number;
  /** The name systemd's KillSignal= takes: SIGTERM, SIGRTMIN+3. */
  name: string;
}

export class SignalError extends Error {}

function nameOf(n: number): string {
  if (n >= RTMIN) return n === RTMIN ? 'SIGRTMIN' : `SIGRTMIN+${n - RTMIN}`;
  const name = Object.keys(NAMES).find((k) => NAMES[k] === n);
  return name ? `SIG${name}` : String(n);
}

/** Docker's table: RTMIN, RTMIN+1..RTMIN+15, RTMAX-14..RTMAX-1, RTMAX. */
function realtime(k: string): number | undefined {
  const m = /^RT(MIN|MAX)(?:([+-])([1-9]\d?))?$/.exec(k);
  if (!m) return undefined;
  const off = Number(m[3] ?? 0);
  if (m[1] === 'MIN') return m[2] === '-' || off > 15 ? undefined : RTMIN + off;
  return m[2] === '+' || off > 14 ? undefined : RTMAX - off;
}

export function parseStopSignal(raw: string | undefined): StopSignal {
  const s = raw ?? '';
  if (s === '') return { number: 15, name: 'SIGTERM' };
  let n: number | undefined;
  if (/^[+-]?\d+$/.test(s)) n = Number(s);
  else {
    const k = s.toUpperCase().replace(/^SIG/, '');
    n = Object.hasOwn(NAMES, k) ? NAMES[k] : realtime(k);
  }
  if (n === undefined || n < 1 || n > RTMAX) throw new SignalError(`STOPSIGNAL ${JSON.stringify(raw)} is not a signal`);
  return { number: n, name: nameOf(n) };
}
