import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  REPLIES, jobSpecSchema, parseCommand, formatCommand, specSha256,
  type ArtifactName, type BuildState, type JobSpec, type Reply, type Verb,
} from '../../src/protocol/index.js';
import { KilnError } from '../../src/shared/errors.js';
import type { GluePort } from '../../src/core/ports.js';
import type { BuildResult } from '../../src/sdk/result.js';

interface MemBuild {
  build: number;
  key: string;
  state: BuildState;
  reason?: string;
  log: Buffer;
  artifacts: Map<ArtifactName, Buffer>;
  progress?: { stage: string; percent: number; message?: string };
  queuedAt: string;
  startedAt?: string;
  finishedAt?: string;
}
interface MemJob { spec: JobSpec; enabled: boolean; builds: Map<number, MemBuild>; keys: Map<string, number>; next: number }

/**
 * An in-memory GluePort for route tests, faithful to the contract: arguments go through the protocol's own
 * formatter/parser, job.put and job.build are idempotent (same key => same build), replies are validated by the
 * protocol's reply schemas, and an "unavailable" switch rejects every call with backend_unavailable.
 * Tests drive builds with `start`, `progress`, `appendLog`, `succeed`, `fail`.
 */
export class MemoryGlue implements GluePort {
  readonly jobs = new Map<number, MemJob>();
  readonly calls: Array<{ verb: string; args: Array<string | number> }> = [];
  available = true;

  async call<V extends keyof typeof REPLIES>(verb: V, args: ReadonlyArray<string | number>, stdin?: string | Buffer): Promise<Reply<V>> {
    this.calls.push({ verb, args: [...args] });
    if (!this.available) throw new KilnError('backend_unavailable', 'The build service is unreachable.');
    const req = parseCommand(formatCommand(verb as Verb, ...args));
    const reply = this.dispatch(req.verb, req.args as unknown[], stdin);
    return REPLIES[verb].parse(reply) as Reply<V>;
  }

  private job(id: number): MemJob {
    const j = this.jobs.get(id);
    if (!j) throw new KilnError('not_found', `no job ${id}`);
    return j;
  }
  private build(job: number, build: number): MemBuild {
    const b = this.job(job).builds.get(build);
    if (!b) throw new KilnError('not_found', `no build ${job}/${build}`);
    return b;
  }

  private dispatch(verb: Verb, args: unknown[], stdin?: string | Buffer): unknown {
    switch (verb) {
      case 'ping': return { protocol: 1, backend: 'memory' };
      case 'job.put': {
        const id = args[0] as number;
        let raw: unknown;
        try { raw = JSON.parse(String(stdin ?? '')); } catch { throw new KilnError('invalid_input', 'job spec is not JSON'); }
        const parsed = jobSpecSchema.safeParse(raw);
        if (!parsed.success) throw new KilnError('invalid_input', `bad job spec: ${parsed.error.issues[0]?.message}`);
        const existing = this.jobs.get(id);
        if (existing) { existing.spec = parsed.data; existing.enabled = parsed.data.enabled; return { job: id, created: false }; }
        this.jobs.set(id, { spec: parsed.data, enabled: parsed.data.enabled, builds: new Map(), keys: new Map(), next: 1 });
        return { job: id, created: true };
      }
      case 'job.enable': this.job(args[0] as number).enabled = true; return { job: args[0], enabled: true };
      case 'job.disable': this.job(args[0] as number).enabled = false; return { job: args[0], enabled: false };
      case 'job.delete': return { job: args[0], deleted: this.jobs.delete(args[0] as number) };
      case 'job.build': {
        const [id, key, sha] = args as [number, string, string | undefined];
        const j = this.job(id);
        const prior = j.keys.get(key);
        if (prior !== undefined) return { job: id, build: prior, created: false };
        const context = j.spec.contextTarBase64 ? Buffer.from(j.spec.contextTarBase64, 'base64') : undefined;
        if (sha !== undefined && specSha256(j.spec.dockerfile, context) !== sha) throw new KilnError('conflict', 'the job holds another version');
        const n = j.next++;
        j.keys.set(key, n);
        j.builds.set(n, { build: n, key, state: 'queued', log: Buffer.alloc(0), artifacts: new Map(), queuedAt: new Date().toISOString() });
        return { job: id, build: n, created: true };
      }
      case 'build.status': {
        const [id, n] = args as [number, number];
        const b = this.build(id, n);
        return {
          job: id, build: n, state: b.state, reason: b.reason, queuedAt: b.queuedAt, startedAt: b.startedAt, finishedAt: b.finishedAt,
          progress: b.progress, artifacts: [...b.artifacts].map(([name, buf]) => ({ name, size: buf.length })),
        };
      }
      case 'build.log': {
        const [id, n, offset] = args as [number, number, number];
        const b = this.build(id, n);
        const slice = b.log.subarray(Math.min(offset, b.log.length), Math.min(offset + 256 * 1024, b.log.length));
        return { text: slice.toString('utf8'), offset, nextOffset: offset + slice.length, more: b.state === 'queued' || b.state === 'running' || offset + slice.length < b.log.length };
      }
      case 'build.cancel': {
        const [id, n] = args as [number, number];
        const b = this.build(id, n);
        if (b.state === 'queued' || b.state === 'running') { b.state = 'cancelled'; b.finishedAt = new Date().toISOString(); }
        return { job: id, build: n, state: b.state };
      }
      case 'build.withdraw': {
        const [id, key] = args as [number, string];
        const n = this.jobs.get(id)?.keys.get(key);
        if (n === undefined) return { job: id, withdrawn: false };
        const b = this.build(id, n);
        if (b.state === 'queued' || b.state === 'running') { b.state = 'cancelled'; b.finishedAt = new Date().toISOString(); }
        return { job: id, withdrawn: true, build: n, state: b.state };
      }
      case 'jobs.list': return { jobs: [...this.jobs].map(([id, j]) => ({ job: id, backendName: `kiln-job-${id}`, managed: true, enabled: j.enabled, schedule: j.spec.schedule, lastBuild: j.next - 1 || undefined })) };
      case 'queue.list': return { items: [] };
      default: throw new KilnError('invalid_input', `verb ${verb} not served here`);
    }
  }

  async artifact(job: number, build: number, name: ArtifactName, offset = 0): Promise<Readable> {
    this.calls.push({ verb: 'build.artifact', args: [job, build, name, offset] });
    if (!this.available) throw new KilnError('backend_unavailable', 'The build service is unreachable.');
    parseCommand(formatCommand('build.artifact', job, build, name, offset));
    const buf = this.build(job, build).artifacts.get(name);
    if (!buf) throw new KilnError('not_found', `no artifact ${name}`);
    return Readable.from([buf.subarray(offset)]);
  }

  async close(): Promise<void> { /* nothing held */ }

  // --- test controls -----------------------------------------------------------------------------------------
  start(job: number, build: number): void {
    const b = this.build(job, build);
    b.state = 'running';
    b.startedAt = new Date().toISOString();
  }
  progress(job: number, build: number, stage: string, percent: number, message?: string): void {
    this.build(job, build).progress = { stage, percent, ...(message ? { message } : {}) };
  }
  appendLog(job: number, build: number, text: string | Buffer): void {
    const b = this.build(job, build);
    b.log = Buffer.concat([b.log, Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8')]);
  }
  /**
   * Finishes a build with an image, a result.json in the SDK's BuildResult shape (artifacts with digests) and, like
   * the SDK, SHA256SUMS over the image: the builder's claim (`claim` replaces its text; null leaves it out).
   */
  succeed(job: number, build: number, image: Buffer = Buffer.from('fake disk image\n'), o: { claim?: string | null } = {}): string {
    const b = this.build(job, build);
    const sha = createHash('sha256').update(image).digest('hex');
    b.artifacts.set('image.raw', image);
    const claim = o.claim === undefined ? `${sha}  image.raw\n` : o.claim;
    if (claim !== null) b.artifacts.set('SHA256SUMS', Buffer.from(claim));
    const now = new Date().toISOString();
    const result: BuildResult = {
      ok: true, sdkVersion: 'memory-glue', startedAt: now, finishedAt: now,
      artifacts: [{ name: 'image.raw', format: 'raw', size: image.length, allocated: image.length, sha256: sha }],
      bootTests: [{ artifact: 'image.raw', firmware: 'bios', passed: true, seconds: 0 }],
      stages: [],
    };
    b.artifacts.set('result.json', Buffer.from(JSON.stringify(result)));
    b.state = 'succeeded';
    b.finishedAt = new Date().toISOString();
    return sha;
  }
  fail(job: number, build: number, reason: string): void {
    const b = this.build(job, build);
    b.state = 'failed';
    b.reason = reason;
    b.finishedAt = new Date().toISOString();
  }
  /** Total builds across jobs. */
  get buildCount(): number {
    let n = 0;
    for (const j of this.jobs.values()) n += j.builds.size;
    return n;
  }
}
