import { KilnError } from '../shared/errors.js';
import { BaseNames, type BaseMatch, type BaseName } from './base-names.js';
import { canonicalImage, familiarImage } from './image-ref.js';
import { expandWord, LexError, LexLimit, UNKNOWN, type Expansion, type Lookup, type Value } from './lex.js';
import { goLower, parseDockerfile, parseFlags, stageName, triggerText, type Escape, type Node } from './parse.js';

/** What the policy knows of a base image's config (as `docker image inspect` shows it). */
export interface BaseImageConfig {
  env?: readonly string[];
  workdir?: string;
  onbuild?: readonly string[];
}

/**
 * The config of a base Kiln makes itself (`docker import` of an mmdebstrap tarball, src/sdk/base.ts): no ENV (the
 * builder adds its default PATH), no WORKDIR, no ONBUILD.
 */
export const KILN_BASE_CONFIG: BaseImageConfig = Object.freeze({
  env: Object.freeze([]),
  workdir: '',
  onbuild: Object.freeze([]),
});

/** Every allowed base as Kiln makes it: what the web and `kiln sdk check` assume (the SDK asks the engine). */
export function kilnBaseConfigs(bases: readonly string[]): Record<string, BaseImageConfig> {
  return Object.fromEntries(bases.map((b) => [b, KILN_BASE_CONFIG]));
}

export interface PolicyOptions {
  /** Base images the admin allows (config sdk.bases), e.g. `debian:bookworm`. */
  bases: readonly string[];
  /** Other names for them (`debian:12`), site mappings first (src/dockerfile/base-names.ts). */
  baseNames?: readonly BaseName[];
  allowRemoteAdd: boolean;
  /** `--build-arg`s: they apply only to ARGs the Dockerfile declares (and the builder's built-in proxy args). */
  buildArgs?: Readonly<Record<string, string>>;
  /**
   * The config of each allowed base, by its name in `bases`. A base missing here is unknown: its ENV may set any
   * variable and its WORKDIR is unknown, so what depends on them is refused; its ONBUILD triggers are assumed none.
   */
  baseConfigs?: Readonly<Record<string, BaseImageConfig>>;
}

export interface PolicyResult {
  /** The allowed bases this Dockerfile starts from (as spelled in `bases`), to be made locally if missing. */
  bases: string[];
  /** Each FROM that starts from one of them, with the name as written and how it led there. */
  froms: BaseFrom[];
  stages: number;
}

/** A FROM of an allowed base: where it is, what it says, and which base that is. */
export interface BaseFrom extends BaseMatch {
  line: number;
  endLine: number;
  /** Its stage name (`AS name`), lower-cased as the builder keeps it. */
  stage?: string;
  /** The image as written, and after expansion. */
  written: string;
  image: string;
}

export interface Violation {
  line: number;
  message: string;
}

/** A stage's image config as the model predicts it (what `docker image inspect` would show). */
export interface StageModel {
  name?: string;
  env: [string, Value][];
  /** Keys not in `env` may be set too (an unknown base's ENV, or an ENV whose key is unknown). */
  envOpen: boolean;
  workdir: Value;
  labels: Map<string, Value>;
  onbuild: string[];
}

export interface Evaluation {
  /** What is refused in the build of this Dockerfile. */
  violations: Violation[];
  /** What the final stage's ONBUILD triggers would do in Kiln's own layer on the final image. */
  layerViolations: Violation[];
  bases: string[];
  froms: BaseFrom[];
  stages: StageModel[];
}

const REMOTE = /^(?:[a-z][a-z0-9+.-]*:\/\/|git@)/i;
const SYNTAX = /^#\s*syntax\s*=/i;
/** Kernel filesystems: a working directory there is never a real project directory, and /proc/self/fd/N is how
 * CVE-2024-21626 reached the build host through runc's leaked descriptors (the engine's runc is patched; this is
 * the second line). */
const KERNEL_DIRS = /^\/(?:proc|sys|dev)(?:\/|$)/;
const RUN_FLAGS_REFUSED = new Set(['mount', 'network', 'security']);
/**
 * The legacy builder's predefined proxy args: every stage sees them without declaring them (moby
 * builder/dockerfile/buildargs.go, 20.10).
 */
export const PROXY_ARG_NAMES: readonly string[] = [
  'HTTP_PROXY',
  'http_proxy',
  'HTTPS_PROXY',
  'https_proxy',
  'FTP_PROXY',
  'ftp_proxy',
  'NO_PROXY',
  'no_proxy',
];
const BUILTIN_ARGS = new Set(PROXY_ARG_NAMES);
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * How much work a check may do (instructions and their words, ENV entries copied into a stage, triggers fired):
 * far more than any real Dockerfile needs, and a bound on what a crafted one (a thousand triggers firing in
 * thousands of stages) can cost the web or the SDK.
 */
const WORK_LIMIT = 500_000;
class TooComplex extends Error {}
const UNDECIDABLE =
  "which Kiln cannot know before the build (a base image's ENV it was not told, or a variable named by one); set the value with ENV or ARG in this Dockerfile";

/**
 * Checks a Dockerfile before anything is built and lists every violation with its line number. Every decision is
 * made on the instruction as the legacy builder will run it: expanded with its own rules (ARG, --build-arg, ENV,
 * `${X:-}`, `${X:+}`, escapes, the escape directive), and with ONBUILD triggers evaluated where they fire. Refused:
 * - a `# syntax=` directive (BuildKit would fetch and run that frontend image);
 * - FROM anything but an earlier stage, `scratch` or a base in the admin's list (the engine would pull it);
 *   COPY --from anything but an earlier stage (same);
 * - ADD of a remote URL unless the admin allows it (the engine fetches it on the host's network);
 * - RUN --mount/--network/--security;
 * - a WORKDIR in /proc, /sys or /dev (checklist case 43);
 * - whatever of the above cannot be decided statically, and what the builder itself refuses before running.
 */
export function checkDockerfile(text: string, opts: PolicyOptions): PolicyResult {
  const r = evaluateDockerfile(text, opts);
  const violations = [...r.violations, ...r.layerViolations].sort((a, b) => a.line - b.line);
  if (violations.length) {
    const msg = 'Dockerfile refused by policy:\n' + violations.map((v) => `  line ${v.line}: ${v.message}`).join('\n');
    throw new KilnError('policy_violation', msg, { detail: violations });
  }
  return { bases: r.bases, froms: r.froms, stages: r.stages.length };
}

/** The model behind checkDockerfile: violations plus each stage's predicted image config. */
export function evaluateDockerfile(text: string, opts: PolicyOptions): Evaluation {
  return new Evaluator(opts).run(text);
}

/** The builder's build args (moby builder/dockerfile/buildargs.go): declared ARGs, global ARGs, --build-arg. */
class BuildArgs {
  allowed = new Map<string, Value | null>();
  meta = new Map<string, Value | null>();
  /** An ARG whose name is unknown was declared: any name may be allowed. */
  open = false;
  constructor(private readonly options: ReadonlyMap<string, string>) {}

  /** A new stage: global ARGs stay (for FROM and as defaults), declared ones are forgotten. */
  forStage(): BuildArgs {
    const b = new BuildArgs(this.options);
    b.meta = new Map(this.meta);
    return b;
  }

  /** An ARG's value as the builder's GetAllAllowed sees it (undefined: not set). */
  allowedValue(key: string): Value | undefined {
    return this.value(key, this.allowed);
  }

  /** A global ARG's value as FROM sees it (GetAllMeta). */
  metaValue(key: string): Value | undefined {
    return this.value(key, this.meta);
  }

  private value(key: string, source: Map<string, Value | null>): Value | undefined {
    if (!source.has(key) && !BUILTIN_ARGS.has(key)) return undefined;
    const option = this.options.get(key);
    if (option !== undefined) return option;
    // Declared without a value (or not declared, for a built-in): the global ARG's value, if any.
    return source.get(key) ?? this.meta.get(key) ?? undefined;
  }
}

interface Trigger {
  text: string;
  /** Parsed once, however many stages it fires in. */
  parsed?: ReturnType<typeof parseDockerfile>;
  /** The line it is reported at: its ONBUILD in this Dockerfile, or the FROM of the base image that carries it. */
  line: number;
  from?: string;
}

interface Stage extends StageModel {
  /** Where each ENV key is in `env` (its first occurrence, as the builder's lookup finds it). */
  envIndex: Map<string, number>;
  args: BuildArgs;
  triggers: Trigger[];
}

/** The stages a COPY --from or FROM can name: those of this build that are already complete. */
interface StageTable {
  names: Map<string, number>;
  count: number;
}

interface Ctx {
  escape: Escape;
  table: StageTable;
  /** Where a finding is reported and how it is worded. */
  report: (message: string) => void;
  /** The line a new ONBUILD is attributed to. */
  line: number;
}

class Evaluator {
  private readonly violations: Violation[] = [];
  private readonly layerViolations: Violation[] = [];
  /** Where findings go: the build's own, or (while the final stage's triggers fire there) Kiln's layer's. */
  private sink = this.violations;
  private readonly stages: Stage[] = [];
  private readonly table: StageTable = { names: new Map(), count: 0 };
  private readonly usedBases = new Set<string>();
  private readonly froms: BaseFrom[] = [];
  private readonly names: BaseNames;
  private readonly options: ReadonlyMap<string, string>;
  private work = 0;
  /** The line being checked (where a check that gives up says so). */
  private line = 1;

  constructor(private readonly opts: PolicyOptions) {
    this.names = new BaseNames(opts.bases, opts.baseNames);
    this.options = new Map(Object.entries(opts.buildArgs ?? {}));
  }

  private add(line: number, message: string): void {
    this.sink.push({ line, message });
  }

  private spend(n: number): void {
    this.work += n;
    if (this.work > WORK_LIMIT) throw new TooComplex();
  }

  run(text: string): Evaluation {
    try {
      this.check(text);
    } catch (e) {
      if (!(e instanceof TooComplex)) throw e;
      this.add(
        this.line,
        `Kiln stops checking here: the Dockerfile takes too much work to check (very many stages, ENV entries or ONBUILD triggers firing); make it simpler`,
      );
    }
    return this.result();
  }

  private check(text: string): void {
    this.syntaxDirectives(text);
    const parsed = parseDockerfile(text);
    if (parsed.error) return this.add(parsed.error.line, `${parsed.error.message} (the builder refuses the file)`);
    const meta = new BuildArgs(this.options);
    let stage: Stage | undefined;
    for (const node of parsed.nodes) {
      const line = node.startLine;
      this.line = line;
      if (node.error) this.add(line, `${node.error} (the builder refuses the Dockerfile)`);
      if (node.keyword === 'from') {
        if (stage) this.commit(stage);
        stage = this.beginStage(node, meta, parsed.escape);
        continue;
      }
      if (node.error) continue;
      if (!stage) {
        if (node.keyword === 'arg') this.metaArg(node, meta, parsed.escape);
        else this.add(line, `${node.keyword.toUpperCase()} before the first FROM`);
        continue;
      }
      this.dispatch(stage, node, { escape: parsed.escape, table: this.table, line, report: (m) => this.add(line, m) });
    }
    if (!stage) return this.add(1, 'the Dockerfile has no FROM instruction');
    this.commit(stage);
    this.sink = this.layerViolations;
    // Kiln's own layers (kernel and init, live ISO) are built `FROM <the final image>` from a Dockerfile of their
    // own, without build args: the final stage's triggers fire there, with no stages to name.
    const layer = this.child(stage, new BuildArgs(new Map()));
    const note = 'it fires when Kiln builds its own layer on the final image (kernel, init or live ISO)';
    for (const t of stage.triggers) this.fire(layer, t, '\\', { names: new Map(), count: 0 }, note);
  }

  private result(): Evaluation {
    return {
      violations: unique(this.violations),
      layerViolations: unique(this.layerViolations),
      bases: [...this.usedBases],
      froms: this.froms,
      stages: this.stages.map(({ args: _a, triggers: _t, envIndex: _i, ...model }) => model),
    };
  }

  /** Parser directives are only recognised before the first non-comment line; refuse `syntax` anywhere in that block. */
  private syntaxDirectives(text: string): void {
    const lines = text.replace(/^\uFEFF/, '').split('\n');
    for (let i = 0; i < lines.length; i++) {
      const l = lines[i]!.trim();
      if (l === '') continue;
      if (!l.startsWith('#')) break;
      if (SYNTAX.test(l)) this.add(i + 1, '`# syntax=` directives are not allowed (the builder uses its own frontend)');
    }
  }

  private commit(stage: Stage): void {
    if (stage.name !== undefined) this.table.names.set(stage.name, this.stages.length);
    this.stages.push(stage);
    this.table.count = this.stages.length;
  }

  /** A stage's state right after its FROM, before the parent's triggers fire (builder beginStage). */
  private child(
    parent: Pick<Stage, 'env' | 'envIndex' | 'envOpen' | 'workdir' | 'labels'>,
    args: BuildArgs,
    name?: string,
  ): Stage {
    this.spend(parent.env.length + parent.labels.size);
    return {
      name,
      args,
      triggers: [],
      onbuild: [],
      env: parent.env.map(([k, v]) => [k, v] as [string, Value]),
      envIndex: new Map(parent.envIndex),
      envOpen: parent.envOpen,
      workdir: parent.workdir,
      labels: new Map(parent.labels),
    };
  }

  private beginStage(node: Node, meta: BuildArgs, escape: Escape): Stage {
    const line = node.startLine;
    if (parseFlags(node).values.has('platform')) this.add(line, 'FROM --platform is not supported');
    let { name } = stageName(node.args);
    if (name !== undefined && this.table.names.has(name)) {
      this.add(line, `FROM: the stage name ${name} is already used (the builder refuses it)`);
      name = undefined;
    }
    const raw = node.args[0] ?? '';
    let image: string | undefined;
    try {
      // FROM sees only the global ARGs (and --build-arg for them); never ENV.
      image = expandWord(raw, (n) => meta.metaValue(n), escape).text;
    } catch (e) {
      this.add(line, `FROM ${clip(raw)}: ${lexFailure(e)}`);
    }
    const shown = image === raw ? clip(raw) : `${clip(raw)} (${clip(image ?? '')})`;
    const parentIndex = image === undefined ? undefined : this.table.names.get(goLower(image));
    let base: { config?: BaseImageConfig; triggersFrom?: string } = { config: KILN_BASE_CONFIG };
    let inherited: Stage | undefined;
    if (image === undefined || raw === '') {
      // already reported; go on as if from scratch to find what else is wrong
    } else if (image === '') {
      this.add(line, `FROM ${clip(raw)}: the base name is empty after expansion (the builder stops there)`);
    } else if (parentIndex !== undefined) {
      inherited = this.stages[parentIndex];
    } else if (image !== 'scratch') {
      const r = this.names.resolve(image);
      if ('refused' in r) {
        this.add(line, `FROM ${shown} ${r.refused}`);
      } else {
        const allowed = r.match.base;
        this.usedBases.add(allowed);
        this.froms.push({
          ...r.match,
          line,
          endLine: node.endLine,
          ...(name !== undefined ? { stage: name } : {}),
          written: raw,
          image,
        });
        base = { config: this.opts.baseConfigs?.[allowed], triggersFrom: familiarImage(canonicalImage(image)!) };
      }
    }

    const stage = inherited
      ? this.child(inherited, meta.forStage(), name)
      : this.fromImage(base.config, meta.forStage(), name);
    const triggers: Trigger[] = inherited
      ? inherited.triggers
      : (base.config?.onbuild ?? []).map((text) => ({ text, line, from: base.triggersFrom }));
    const where = inherited ? `it fires at line ${line} (FROM ${shown})` : `it fires at line ${line}`;
    for (const t of triggers) this.fire(stage, t, escape, this.table, where);
    return stage;
  }

  private fromImage(config: BaseImageConfig | undefined, args: BuildArgs, name?: string): Stage {
    const env: [string, Value][] = (config?.env ?? []).map((e) => {
      const i = e.indexOf('=');
      return i < 0 ? [e, ''] : [e.slice(0, i), e.slice(i + 1)];
    });
    this.spend(env.length);
    const envIndex = new Map<string, number>();
    for (const [i, [k]] of env.entries()) if (!envIndex.has(k)) envIndex.set(k, i);
    const stage: Stage = {
      name,
      args,
      triggers: [],
      onbuild: [],
      env,
      envIndex,
      envOpen: !config,
      workdir: config ? (config.workdir ?? '') : UNKNOWN,
      labels: new Map(),
    };
    // The builder adds its default PATH when the image has none.
    if (config && !envIndex.has('PATH')) setEnv(stage, 'PATH', DEFAULT_PATH);
    return stage;
  }

  /** Runs one ONBUILD trigger where it fires: parsed on its own (default escape), expanded in the child's context. */
  private fire(stage: Stage, t: Trigger, escape: Escape, table: StageTable, where: string): void {
    this.line = t.line;
    // A firing costs more than an instruction read once (its context is set up anew each time).
    this.spend(5);
    const origin = t.from ? `ONBUILD of the base image ${t.from}` : 'ONBUILD';
    const report = (m: string) => this.add(t.line, `${origin} ${m}; ${where}`);
    const parsed = (t.parsed ??= parseDockerfile(t.text));
    const node = parsed.nodes[0];
    if (parsed.error) return report(`${clip(t.text)}: ${parsed.error.message}`);
    if (parsed.nodes.length !== 1 || !node)
      return report(`${clip(t.text)}: onbuild trigger should be a single expression`);
    if (node.error) return report(`${node.keyword.toUpperCase()}: ${node.error} (the builder refuses it)`);
    if (node.keyword === 'from') return report("FROM isn't allowed as an ONBUILD trigger");
    this.dispatch(stage, node, { escape, table, line: t.line, report });
  }

  private metaArg(node: Node, meta: BuildArgs, escape: Escape): void {
    const lookup = (n: string) => meta.allowedValue(n);
    for (const [key, value] of this.expandArgs(node, lookup, escape, (m) => this.add(node.startLine, m)) ?? []) {
      if (key === UNKNOWN) continue;
      meta.allowed.set(key, value);
      meta.meta.set(key, value);
    }
  }

  /** ARG words as [key, value | null (no default)], both expanded; undefined when the builder fails on them. */
  private expandArgs(
    node: Node,
    lookup: Lookup,
    escape: Escape,
    report: (m: string) => void,
  ): [Value, Value | null][] | undefined {
    try {
      return node.args.map((w) => {
        const i = w.indexOf('=');
        const key = value(expandWord(i < 0 ? w : w.slice(0, i), lookup, escape));
        return [key, i < 0 ? null : value(expandWord(w.slice(i + 1), lookup, escape))];
      });
    } catch (e) {
      report(`ARG: ${lexFailure(e)}`);
      return undefined;
    }
  }

  /** A variable's value as the builder sees it in a stage: ENV first, then the ARGs this stage declared. */
  private lookupIn(stage: Stage): Lookup {
    return (name) => {
      const i = stage.envIndex.get(name);
      if (i !== undefined) return stage.env[i]![1];
      if (stage.envOpen) return UNKNOWN;
      return stage.args.allowedValue(name) ?? (stage.args.open ? UNKNOWN : undefined);
    };
  }

  /** One instruction, as the builder's dispatch() runs it: every word expanded against the state before it. */
  private dispatch(stage: Stage, node: Node, ctx: Ctx): void {
    this.spend(1 + node.args.length);
    const kw = node.keyword;
    const lookup = this.lookupIn(stage);
    const expand = (w: string): Expansion => expandWord(w, lookup, ctx.escape);
    const flags = parseFlags(node).values;
    try {
      switch (kw) {
        case 'env':
        case 'label': {
          const pairs: [Value, Value][] = [];
          for (let i = 0; i + 1 < node.args.length; i += 2)
            pairs.push([value(expand(node.args[i]!)), value(expand(node.args[i + 1]!))]);
          for (const [k, v] of pairs) {
            if (kw === 'env') setEnv(stage, k, v);
            else if (k !== UNKNOWN) stage.labels.set(k, v);
          }
          return;
        }
        case 'arg':
          for (const [k, v] of this.expandArgs(node, lookup, ctx.escape, ctx.report) ?? []) {
            if (k === UNKNOWN) stage.args.open = true;
            else stage.args.allowed.set(k, v);
          }
          return;
        case 'workdir':
          return this.workdir(stage, node.args[0] ?? '', expand(node.args[0] ?? ''), ctx);
        case 'add':
        case 'copy': {
          for (const c of flags.get('chown') ?? []) expand(c);
          const words = node.args.map((w) => ({ raw: w, x: expand(w) }));
          if (kw === 'copy') this.copyFrom(flags.get('from')?.[0] ?? '', ctx);
          else if (!this.opts.allowRemoteAdd) for (const s of words.slice(0, -1)) this.remoteAdd(s.raw, s.x, ctx);
          return;
        }
        case 'run':
          for (const f of flags.keys()) if (RUN_FLAGS_REFUSED.has(f)) ctx.report(`RUN --${f} is not allowed`);
          return;
        case 'onbuild':
          stage.onbuild.push(triggerText(node));
          stage.triggers.push({ text: triggerText(node), line: ctx.line });
          return;
        default:
          return;
      }
    } catch (e) {
      ctx.report(`${kw.toUpperCase()}: ${lexFailure(e)}`);
    }
  }

  private workdir(stage: Stage, raw: string, x: Expansion, ctx: Ctx): void {
    if (!x.known) {
      stage.workdir = UNKNOWN;
      return ctx.report(`WORKDIR ${clip(raw)} depends on a value ${UNDECIDABLE}`);
    }
    if (x.text === '')
      return ctx.report(`WORKDIR ${clip(raw)}: the path is empty after expansion (the builder stops there)`);
    if (!x.text.startsWith('/')) {
      if (stage.workdir === UNKNOWN)
        return ctx.report(`WORKDIR ${clip(raw)} is relative to the base image's working directory, ${UNDECIDABLE}`);
      stage.workdir = goJoin('/', stage.workdir, x.text);
    } else {
      stage.workdir = x.text;
    }
    const dir = goClean(stage.workdir);
    if (KERNEL_DIRS.test(dir)) {
      ctx.report(
        `WORKDIR ${clip(dir)} is not allowed (a working directory in /proc, /sys or /dev)${raw === dir ? '' : `; written ${clip(raw)}`}`,
      );
    }
  }

  private copyFrom(from: string, ctx: Ctx): void {
    if (from === '') return;
    if (ctx.table.names.has(goLower(from))) return;
    const ix = goParseInt(from);
    if (ix !== undefined && ix >= 0 && ix < ctx.table.count) return;
    ctx.report(
      `COPY --from=${clip(from)} must name an earlier build stage (the engine would fetch an image of that name)`,
    );
  }

  private remoteAdd(raw: string, x: Expansion, ctx: Ctx): void {
    const written = raw === x.text ? '' : `, written ${clip(raw)}`;
    if (x.known && REMOTE.test(x.text)) {
      ctx.report(
        `ADD of a remote URL (${clip(x.text)}${written}) is not allowed; download it in your CI and add it to the build context`,
      );
    } else if (
      !x.known &&
      (x.prefix === '' || REMOTE.test(x.prefix) || /^[a-z][a-z0-9+.-]*(?::\/?)?$/i.test(x.prefix))
    ) {
      ctx.report(`ADD ${clip(raw)} could be a remote URL: it depends on a value ${UNDECIDABLE}`);
    }
  }
}

/** User text quoted in a finding, cut to a readable length. */
const clip = (t: string) => (t.length > 100 ? `${t.slice(0, 100)}…` : t);

/** Why an expansion failed, and whether the builder fails there too (or only Kiln stops). */
function lexFailure(e: unknown): string {
  if (!(e instanceof LexError)) throw e;
  return e instanceof LexLimit ? e.message : `${e.message} (the builder stops there)`;
}

/** Sorted by line; a trigger that fires in several stages is one finding. */
function unique(vs: Violation[]): Violation[] {
  return [...new Map(vs.map((v) => [`${v.line}\0${v.message}`, v])).values()].sort((a, b) => a.line - b.line);
}

const value = (x: Expansion): Value => (x.known ? x.text : UNKNOWN);

function setEnv(stage: Stage, key: Value, v: Value): void {
  if (key === UNKNOWN) {
    stage.envOpen = true;
    return;
  }
  const i = stage.envIndex.get(key);
  if (i !== undefined) stage.env[i] = [key, v];
  else stage.envIndex.set(key, stage.env.push([key, v]) - 1);
}

/** Go's strconv.ParseInt(s, 10, 0). */
function goParseInt(s: string): number | undefined {
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = BigInt(s);
  if (n > 2n ** 63n - 1n || n < -(2n ** 63n)) return undefined;
  return Number(n);
}

/** Go's path/filepath.Clean on Linux. */
export function goClean(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') {
      if (out.length && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(s);
  }
  const r = (rooted ? '/' : '') + out.join('/');
  return r === '' ? '.' : r;
}

function goJoin(...parts: string[]): string {
  const nonEmpty = parts.filter((p) => p !== '');
  return nonEmpty.length ? goClean(nonEmpty.join('/')) : '';
}
