/** How numbers read on pages (nunjucks filters; public/build.js has the same rules for what it updates live). */

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1238368256 -> "1.15 GiB" (the exact count goes in a title attribute beside it). */
export function humanBytes(v: unknown): string {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${n} ${n === 1 ? 'byte' : 'bytes'}`;
  let x = n;
  let u = 0;
  while (x >= 1024 && u < UNITS.length - 1) {
    x /= 1024;
    u++;
  }
  return `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)} ${UNITS[u]}`;
}

/** 1238368256 -> "1,238,368,256 bytes". */
export function exactBytes(v: unknown): string {
  const n = Number(v);
  return Number.isFinite(n) ? `${Math.round(n).toLocaleString('en-US')} bytes` : '';
}

/** Seconds as "42 s", "3 min 5 s", "1 h 2 min". */
export function humanDuration(v: unknown): string {
  const s = Math.round(Number(v));
  if (!Number.isFinite(s) || s < 0) return '';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
  return `${Math.floor(s / 3600)} h${Math.floor((s % 3600) / 60) ? ` ${Math.floor((s % 3600) / 60)} min` : ''}`;
}

/** An ISO time as "2026-11-26 07:28:15" (UTC, as stored). */
export const shortTime = (v: unknown): string => (typeof v === 'string' ? v.replace('T', ' ').slice(0, 19) : '');
