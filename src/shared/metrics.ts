/**
 * A small Prometheus registry (text exposition format 0.0.4): histograms observed in this process, rendered at
 * scrape time together with gauges the caller computes (builds by state, the queue). prom-client is not a
 * dependency; this is the part of it Kiln needs. One registry per process, like prom-client's default one.
 */

type Labels = Readonly<Record<string, string>>;

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labelText = (l: Labels, extra?: [string, string]): string => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
};
const num = (v: number): string => (Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN');

export class Histogram {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly buckets: readonly number[],
  ) {}

  /** Records one observation (seconds). Labels outside `labelNames` are dropped; missing ones are empty. */
  observe(labels: Labels, value: number): void {
    const l = Object.fromEntries(this.labelNames.map((n) => [n, labels[n] ?? '']));
    const key = JSON.stringify(l);
    let s = this.series.get(key);
    if (!s) {
      s = { labels: l, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) =>
        out.push(`${this.name}_bucket${labelText(s.labels, ['le', num(b)])} ${s.counts[i]}`),
      );
      out.push(`${this.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${s.count}`);
      out.push(`${this.name}_sum${labelText(s.labels)} ${num(s.sum)}`);
      out.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return out;
  }
}

/** A gauge's lines from values computed now: `[[labels, value], ...]`. */
export function gaugeLines(name: string, help: string, values: ReadonlyArray<readonly [Labels, number]>): string[] {
  return [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} gauge`,
    ...values.map(([l, v]) => `${name}${labelText(l)} ${num(v)}`),
  ];
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Every glue call the client codec makes, by verb and outcome (`ok` or the error code). */
export const glueCallSeconds = new Histogram(
  'kiln_glue_call_seconds',
  'Time of glue calls, by verb and outcome (ok or the error code).',
  ['verb', 'outcome'],
  LATENCY_BUCKETS,
);
/** Every HTTP request the web answered, by method, route pattern (never the raw path) and status class. */
export const httpRequestSeconds = new Histogram(
  'kiln_http_request_seconds',
  'Time to answer HTTP requests, by method, route pattern and status class.',
  ['method', 'route', 'status'],
  LATENCY_BUCKETS,
);

/** The histograms of this process, rendered. */
export function renderProcessMetrics(): string[] {
  return [...glueCallSeconds.render(), ...httpRequestSeconds.render()];
}
