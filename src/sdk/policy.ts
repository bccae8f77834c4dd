import { DockerfileParser, type Instruction, type From, type Copy, type Add } from 'dockerfile-ast';
import path from 'node:path';
import { KilnError } from '../shared/errors.js';

export interface PolicyOptions {
  /** Base images the admin allows (config sdk.bases), e.g. `debian:bookworm`. */
  bases: readonly string[];
  allowRemoteAdd: boolean;
  buildArgs?: Readonly<Record<string, string>>;
}

export interface PolicyResult {
  /** The allowed bases this Dockerfile starts from (deduplicated, normalised), to be made locally if missing. */
  bases: string[];
  stages: number;
}

export interface Violation { line: number; message: string }

const REMOTE = /^(?:[a-z][a-z0-9+.-]*:\/\/|git@)/i;
const SYNTAX = /^#\s*syntax\s*=/i;
const RUN_FLAGS_REFUSED = new Set(['mount', 'network', 'security']);
/** Kernel filesystems: a working directory there is never a real project directory, and /proc/self/fd/N is how
 * CVE-2024-21626 reached the build host through runc's leaked descriptors (the engine's runc is patched; this is
 * the second line). */
const KERNEL_DIRS = /^\/(?:proc|sys|dev)(?:\/|$)/;
const WORKDIR_REFUSED = (dir: string) => `WORKDIR ${dir.slice(0, 100)} is not allowed (a working directory in /proc, /sys or /dev)`;

/**
 * Checks a Dockerfile before anything is built and lists every violation with its line number:
 * - no `# syntax=` directive (it would make BuildKit fetch and run an arbitrary frontend image);
 * - FROM (and COPY --from) only from an earlier stage, `scratch`, or a base in the admin's list (nothing can be
 *   pulled, and an unlisted base would be a way around the list);
 * - no ADD of a remote URL unless the admin allows it (the build network can reach internal services);
 * - no RUN --mount/--network/--security (capabilities the builder must not grant), also not in ONBUILD;
 * - no WORKDIR in /proc, /sys or /dev, also not in ONBUILD (checklist case 43).
 */
export function checkDockerfile(text: string, opts: PolicyOptions): PolicyResult {
  const violations: Violation[] = [];
  const lines = text.split(/\r?\n/);
  // Parser directives are only recognised before the first non-comment line; refuse the whole leading comment block.
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!.trim();
    if (l === '') continue;
    if (!l.startsWith('#')) break;
    if (SYNTAX.test(l)) violations.push({ line: i + 1, message: '`# syntax=` directives are not allowed (the builder uses its own frontend)' });
  }

  const df = DockerfileParser.parse(text);
  for (const d of df.getDirectives()) {
    if (d.getName().toLowerCase() === 'syntax' && !violations.some((v) => v.line === d.getRange().start.line + 1)) {
      violations.push({ line: d.getRange().start.line + 1, message: '`# syntax=` directives are not allowed (the builder uses its own frontend)' });
    }
  }

  const globalArgs = new Map<string, string>();
  for (const a of df.getInitialARGs()) {
    const p = a.getProperty();
    if (!p) continue;
    const name = p.getName();
    globalArgs.set(name, opts.buildArgs?.[name] ?? p.getValue() ?? '');
  }
  for (const [k, v] of Object.entries(opts.buildArgs ?? {})) if (globalArgs.has(k)) globalArgs.set(k, v);

  const allowed = new Set(opts.bases.map(normaliseImage));
  const stageNames: string[] = [];
  const bases = new Set<string>();
  let stageIndex = -1;
  let sawFrom = false;
  // The stage's working directory as far as it is known without running anything (variables are left as written).
  let workdir = '/';
  const stageWorkdirs: string[] = [];

  for (const ins of df.getInstructions()) {
    const line = ins.getRange().start.line + 1;
    const kw = ins.getKeyword().toUpperCase();
    if (kw === 'FROM') {
      sawFrom = true;
      stageIndex++;
      const from = ins as From;
      const raw = from.getImage() ?? '';
      const image = substitute(raw, globalArgs);
      const stage = from.getBuildStage();
      if (from.getPlatformFlag()) violations.push({ line, message: 'FROM --platform is not supported' });
      if (!image) {
        violations.push({ line, message: 'FROM needs an image' });
      } else if (stageNames.includes(image.toLowerCase())) {
        // an earlier stage of this Dockerfile
      } else if (image.toLowerCase() === 'scratch') {
        // the empty image: nothing to fetch
      } else if (/\$/.test(image)) {
        violations.push({ line, message: `FROM ${raw}: the image name uses a variable that has no value` });
      } else if (!allowed.has(normaliseImage(image))) {
        violations.push({ line, message: `FROM ${image} is not an allowed base image; allowed: ${[...allowed].join(', ')}` });
      } else {
        bases.add(normaliseImage(image));
      }
      if (stageIndex > 0) stageWorkdirs.push(workdir);
      // A stage built FROM an earlier one starts in that stage's working directory.
      const parent = stageNames.indexOf(image.toLowerCase());
      workdir = parent >= 0 ? stageWorkdirs[parent] ?? '/' : '/';
      stageNames.push(stage ? stage.toLowerCase() : `\0${stageIndex}`);
      continue;
    }
    if (!sawFrom && kw !== 'ARG') {
      violations.push({ line, message: `${kw} before the first FROM` });
      continue;
    }
    if (kw === 'COPY' || kw === 'ADD') {
      const fromFlag = (ins as Copy).getFlags().find((f) => f.getName().toLowerCase() === 'from');
      if (fromFlag) {
        const v = (fromFlag.getValue() ?? '').toLowerCase();
        const idx = /^\d+$/.test(v) ? Number(v) : -1;
        const ok = (idx >= 0 && idx < stageIndex) || stageNames.slice(0, stageIndex).includes(v);
        if (!ok) violations.push({ line, message: `${kw} --from=${fromFlag.getValue() ?? ''} must name an earlier build stage` });
      }
    }
    if (kw === 'ADD' && !opts.allowRemoteAdd) {
      const srcs = sources(ins as Add);
      for (const s of srcs) {
        if (REMOTE.test(s)) violations.push({ line, message: `ADD of a remote URL (${s.slice(0, 100)}) is not allowed; download it in your CI and add it to the build context` });
      }
    }
    if (kw === 'RUN') {
      for (const f of (ins as unknown as { getFlags(): { getName(): string }[] }).getFlags?.() ?? []) {
        if (RUN_FLAGS_REFUSED.has(f.getName().toLowerCase())) violations.push({ line, message: `RUN --${f.getName()} is not allowed` });
      }
    }
    if (kw === 'WORKDIR') {
      workdir = path.posix.resolve(workdir, (ins.getArgumentsContent() ?? '').trim() || '.');
      if (KERNEL_DIRS.test(workdir)) violations.push({ line, message: WORKDIR_REFUSED(workdir) });
    }
    if (kw === 'ONBUILD') {
      const body = (ins.getArgumentsContent() ?? '').trim();
      if (/^ADD\b/i.test(body) && !opts.allowRemoteAdd && body.split(/\s+/).some((t) => REMOTE.test(t.replace(/^["[]+|[",\]]+$/g, '')))) {
        violations.push({ line, message: 'ONBUILD ADD of a remote URL is not allowed' });
      }
      const flag = /^RUN\s+--([a-z-]+)/i.exec(body)?.[1]?.toLowerCase();
      if (flag && RUN_FLAGS_REFUSED.has(flag)) violations.push({ line, message: `ONBUILD RUN --${flag} is not allowed` });
      const wd = /^WORKDIR\s+(.+)$/i.exec(body)?.[1];
      // Relative to whatever the child stage's WORKDIR is: checked as if from /.
      if (wd && KERNEL_DIRS.test(path.posix.resolve('/', wd.trim()))) violations.push({ line, message: `ONBUILD ${WORKDIR_REFUSED(path.posix.resolve('/', wd.trim()))}` });
    }
  }
  if (!sawFrom) violations.push({ line: 1, message: 'the Dockerfile has no FROM instruction' });

  if (violations.length) {
    violations.sort((a, b) => a.line - b.line);
    const msg = 'Dockerfile refused by policy:\n' + violations.map((v) => `  line ${v.line}: ${v.message}`).join('\n');
    throw new KilnError('policy_violation', msg, { detail: violations });
  }
  return { bases: [...bases], stages: stageIndex + 1 };
}

/** `docker.io/library/debian:bookworm` and `debian:bookworm` are the same image; a missing tag means latest. */
export function normaliseImage(image: string): string {
  let s = image.trim().toLowerCase();
  s = s.replace(/^(?:docker\.io|index\.docker\.io|registry-1\.docker\.io)\//, '').replace(/^library\//, '');
  const lastSlash = s.lastIndexOf('/');
  if (!s.includes('@') && !s.slice(lastSlash + 1).includes(':')) s += ':latest';
  return s;
}

function substitute(s: string, vars: Map<string, string>): string {
  return s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    const v = vars.get(name);
    if (v !== undefined && v !== '') return v;
    const def = /^\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}$/.exec(m);
    return def ? def[1]! : m;
  });
}

/** The source arguments of an ADD (all but the destination), without flags, quotes or JSON brackets. */
function sources(ins: Instruction & { getFlags?: () => unknown[] }): string[] {
  const args = ins.getArguments().map((a) => a.getValue()).filter((v) => !v.startsWith('--'));
  const content = (ins.getArgumentsContent() ?? '').trim().replace(/^(--\S+\s+)+/, '');
  if (content.startsWith('[')) {
    try {
      const arr = JSON.parse(content) as unknown;
      if (Array.isArray(arr)) return arr.slice(0, -1).map(String);
    } catch { /* not JSON after all: fall through */ }
  }
  return args.slice(0, -1).map((a) => a.replace(/^["']|["']$/g, ''));
}
