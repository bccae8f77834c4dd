import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { evaluateDockerfile } from '../../src/dockerfile/policy.js';
import { UNKNOWN } from '../../src/dockerfile/lex.js';
import { engineBuild, removeImages } from './engine.js';

/**
 * The policy's model of the builder against the real engine (Docker 20.10's legacy builder, the one the SDK
 * drives): random FROM scratch Dockerfiles whose words use `$X`, `${X}`, `${X:-..}`, `${X:+..}`, quotes and
 * escapes, with global and stage ARGs, --build-arg (declared or not), ENV chains, WORKDIR chains, ONBUILD
 * triggers that fire in a second stage, the `# escape=` directive, continuations, comments, blank lines, CRLF and
 * keywords in any case. The engine's image config (ENV, LABELs, WORKDIR, ONBUILD) must be what the model predicts,
 * and the engine must fail exactly when the model says the builder stops. One build per run, no layer cache, and
 * every image made is removed by id.
 */

const RUNS = Number(process.env.KILN_DIFF_RUNS ?? 30);
const made: string[] = [];
afterAll(async () => removeImages(made), 600_000);

const NAMES = ['A', 'B', 'C', 'x_1', 'é', 'PATH', 'HTTP_PROXY', 'no_proxy'];
const name = fc.constantFrom(...NAMES);

/** A word of the builder's expansion language, for escape token `e`; no bare spaces (ENV/LABEL split there). */
function word(e: string, depth: number, refusing: boolean): fc.Arbitrary<string> {
  const lit = fc.constantFrom('a', 'b', 'x1', '/', '.', '..', '-', ':', 'é', '{', '}', '=', '#', 'http://h/');
  const inner = depth > 0 ? word(e, depth - 1, refusing) : lit;
  const dq = fc
    .array(
      fc.oneof(
        lit,
        fc.constant(' '),
        name.map((n) => `$${n}`),
        fc.constantFrom(`${e}"`, `${e}$`, `${e}a`, `${e}${e}`, "'"),
        inner.filter((w) => !w.includes('"')).map((w) => `\${B:-${w}}`),
      ),
      { maxLength: 4 },
    )
    .map((ps) => `"${ps.join('')}"`);
  const part = fc.oneof(
    { weight: 4, arbitrary: lit },
    { weight: 3, arbitrary: name.map((n) => `$${n}`) },
    { weight: 2, arbitrary: name.map((n) => `\${${n}}`) },
    { weight: 3, arbitrary: fc.tuple(name, fc.constantFrom(':-', ':+'), inner).map(([n, m, w]) => `\${${n}${m}${w}}`) },
    // Refuses an unset (and with the colon, an empty) variable: the model must know what is set.
    {
      weight: refusing ? 2 : 0,
      arbitrary: fc
        .tuple(name, fc.constantFrom('?', ':?'), fc.option(inner, { nil: '' }))
        .map(([n, m, w]) => `\${${n}${m}${w}}`),
    },
    { weight: 2, arbitrary: fc.constantFrom(`${e}$`, `${e} `, `${e}a`, `${e}"`, `${e}'`, `${e}${e}`, '$/', '$') },
    { weight: 1, arbitrary: fc.constantFrom("'$A b'", "'\"'", "''") },
    { weight: 2, arbitrary: dq },
  );
  // A byte order mark at the start of a word is dropped by the builder's scanner.
  const bom = fc.oneof({ weight: 9, arbitrary: fc.constant('') }, { weight: 1, arbitrary: fc.constant('\uFEFF') });
  return fc.tuple(bom, fc.array(part, { minLength: 1, maxLength: 4 })).map(([b, ps]) => b + ps.join(''));
}

type Instr =
  | { kind: 'arg'; args: [string, string | null][] }
  | { kind: 'env'; pairs: [string, string][]; old: boolean }
  | { kind: 'label'; words: string[] }
  | { kind: 'workdir'; path: string }
  | { kind: 'onbuild'; body: Instr };

function instr(e: string, refusing: boolean): fc.Arbitrary<Instr> {
  const w = word(e, 2, refusing);
  const path = fc
    .array(
      fc.oneof(
        fc.constantFrom('/', 'a', 'b ', '..', '.', 'x/y'),
        name.map((n) => `$${n}`),
        fc.tuple(name, w).map(([n, d]) => `\${${n}:-${d}}`),
      ),
      { minLength: 1, maxLength: 4 },
    )
    .map((p) => p.join(''));
  const base = fc.oneof(
    {
      weight: 2,
      arbitrary: fc
        .array(fc.tuple(name, fc.option(w, { nil: null })), { minLength: 1, maxLength: 3 })
        .map((args): Instr => ({ kind: 'arg', args })),
    },
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.array(fc.tuple(name, w), { minLength: 1, maxLength: 3 }), fc.boolean())
        .map(([pairs, old]): Instr => ({ kind: 'env', pairs: old ? pairs.slice(0, 1) : pairs, old })),
    },
    {
      weight: 4,
      arbitrary: fc.array(w, { minLength: 1, maxLength: 3 }).map((words): Instr => ({ kind: 'label', words })),
    },
    { weight: 2, arbitrary: path.map((p): Instr => ({ kind: 'workdir', path: p })) },
  );
  return fc.oneof(
    { weight: 5, arbitrary: base },
    { weight: 2, arbitrary: base.map((body): Instr => ({ kind: 'onbuild', body })) },
  );
}

interface Program {
  escape: string;
  globals: [string, string | null][];
  fromArg: boolean;
  one: Instr[];
  two: Instr[] | null;
  buildArgs: Record<string, string>;
  caseSeed: number;
  crlf: boolean;
  noise: number;
  /** Something the builder refuses, put into stage one: the failure must be predicted. */
  broken: { at: number; text: string } | null;
}

/** Words the builder's lexer refuses (in a LABEL, an ENV, a WORKDIR or a trigger that fires). */
const BROKEN = fc
  .tuple(
    fc.constantFrom('LABEL bad=', 'ENV BAD=', 'WORKDIR /', 'ONBUILD LABEL bad=', 'ONBUILD WORKDIR /'),
    fc.constantFrom(
      '${A-x}',
      '${}',
      '${A+x}',
      '${A',
      '"open',
      "'open",
      '${A:-x',
      '${:}',
      '${A:}b}',
      '${A:=x}',
      '${A#x}',
    ),
  )
  .map(([i, w]) => `${i}${w}`);

function program(): fc.Arbitrary<Program> {
  // Words that refuse unset variables (`${X?}`) in a quarter of the programs: most builds should succeed.
  return fc
    .tuple(
      fc.constantFrom('\\', '`'),
      fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
    )
    .chain(([escape, refusing]) =>
      fc.record({
        escape: fc.constant(escape),
        globals: fc.array(fc.tuple(name, fc.option(word(escape, 1, refusing), { nil: null })), { maxLength: 3 }),
        fromArg: fc.boolean(),
        one: fc.array(instr(escape, refusing), { minLength: 1, maxLength: 8 }),
        two: fc.option(fc.array(instr(escape, refusing), { maxLength: 5 }), { nil: null }),
        buildArgs: fc.dictionary(name, fc.constantFrom('v', '', '$A', 'http://h/', '/srv'), { maxKeys: 3 }),
        caseSeed: fc.nat(),
        crlf: fc.boolean(),
        noise: fc.nat(),
        broken: fc.oneof(
          { weight: 4, arbitrary: fc.constant(null) },
          { weight: 1, arbitrary: fc.record({ at: fc.nat(), text: BROKEN }) },
        ),
      }),
    );
}

/** The Dockerfile text, with keywords in mixed case, comments, blank lines and continuations mixed in. */
function render(p: Program): string {
  let label = 0;
  let seed = p.caseSeed;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const kw = (k: string) => [k, k.toLowerCase(), k[0] + k.slice(1).toLowerCase()][rnd(3)]!;
  const arg = ([n, v]: [string, string | null]) => (v === null ? n : `${n}=${v}`);
  const one = (i: Instr): string => {
    switch (i.kind) {
      case 'arg':
        return `${kw('ARG')} ${i.args.map(arg).join(' ')}`;
      case 'env':
        return i.old
          ? `${kw('ENV')} ${i.pairs[0]![0]} ${i.pairs[0]![1]}`
          : `${kw('ENV')} ${i.pairs.map(([n, v]) => `${n}=${v}`).join(' ')}`;
      case 'label':
        return `${kw('LABEL')} ${i.words.map((w) => `l${label++}=${w}`).join(' ')}`;
      case 'workdir':
        return `${kw('WORKDIR')} ${i.path}`;
      case 'onbuild':
        return `${kw('ONBUILD')} ${one(i.body)}`;
    }
  };
  const lines: string[] = [];
  if (p.escape === '`') lines.push('# escape=`');
  for (const g of p.globals) lines.push(`${kw('ARG')} ${arg(g)}`);
  if (p.fromArg) lines.push(`${kw('ARG')} BASE=scratch`);
  lines.push(`${kw('FROM')} ${p.fromArg ? '${BASE}' : 'scratch'} AS one`);
  const first = p.one.map(one);
  if (p.broken) first.splice(p.broken.at % (first.length + 1), 0, p.broken.text);
  lines.push(...first);
  if (p.two) {
    lines.push(`${kw('FROM')} one`);
    for (const i of p.two) lines.push(one(i));
  }
  // Noise the parser must see through: a continuation at a space (with a comment and a blank line inside it).
  const out: string[] = [];
  for (const l of lines) {
    const sp = l.indexOf(' ', l.indexOf(' ') + 1);
    if (!l.startsWith('#') && sp > 0 && rnd(4) === 0 && !l.slice(0, sp).endsWith(p.escape)) {
      out.push(`${l.slice(0, sp)} ${p.escape}`, '  # inside', '', `    ${l.slice(sp + 1)}`);
    } else out.push(l);
    if (rnd(6) === 0 && p.noise % 2 === 0) out.push('# a comment', '');
  }
  return out.join(p.crlf ? '\r\n' : '\n') + '\n';
}

const outcomes = { built: 0, refused: 0 };
afterAll(() =>
  console.log(`engine differential: ${outcomes.built} builds succeeded, ${outcomes.refused} were refused as predicted`),
);

const show = (v: unknown) => (v === UNKNOWN ? '<unknown>' : v);

/** Rules the policy relies on that random words seldom hit: each checked against the engine. */
const FACTS: [string, string, Record<string, string>][] = [
  ['FROM sees a built-in proxy arg without any ARG', 'FROM $HTTP_PROXY\nLABEL a=1\n', { HTTP_PROXY: 'scratch' }],
  [
    'FROM names an earlier stage through a global ARG',
    'ARG S=one\nFROM scratch AS one\nLABEL a=1\nFROM $S\nLABEL b=2\n',
    {},
  ],
  [
    'COPY --from is not expanded (an image named $S)',
    'FROM scratch AS a\nFROM scratch\nARG S=a\nCOPY --from=$S /x /y\n',
    {},
  ],
  [
    'COPY --from names stages in any case; an empty --from is none',
    'FROM scratch AS Stg\nCOPY afile /afile\nFROM scratch\nCOPY --from=STG /afile /x\nCOPY --from= afile /y\nLABEL ok=1\n',
    {},
  ],
  ['COPY --from=0 in stage 0 is the current stage', 'FROM scratch\nCOPY --from=0 /x /y\n', {}],
  ['JSON form words are expanded', 'FROM scratch\nARG F=afile\nCOPY ["$F", "/x"]\nLABEL ok=1\n', {}],
  [
    'a trigger fires before the child declares its ARGs; built-in args reach it',
    'FROM scratch AS a\nONBUILD LABEL t=$V u=$HTTP_PROXY\nFROM a\nARG V=1\nLABEL v=$V\n',
    { V: 'x', HTTP_PROXY: 'hp' },
  ],
  [
    'a trigger keeps its continuation joined, without the comment',
    'FROM scratch AS a\nONBUILD LABEL t=1 \\\n  # c\n  u=2\nFROM a\n',
    {},
  ],
  ['an ARG from a trigger is declared in the child', 'FROM scratch AS a\nONBUILD ARG X=trig\nFROM a\nLABEL x=$X\n', {}],
  ['ENV shadows ARG and --build-arg', 'FROM scratch\nENV A=1\nARG A=2\nLABEL a=$A\n', { A: '3' }],
  [
    'a stage ARG without default takes the global value, and --build-arg over it',
    'ARG A=meta\nFROM scratch\nARG A\nARG B\nLABEL a=$A b=${B?}\n',
    { A: 'opt', B: '' },
  ],
  ['ONBUILD FROM', 'FROM scratch\nONBUILD FROM scratch\n', {}],
  ['unknown instruction', 'FROM scratch\nFOO bar\n', {}],
  ['instruction before FROM', 'LABEL a=1\nFROM scratch\n', {}],
  ['reused stage name', 'FROM scratch AS a\nFROM scratch AS a\n', {}],
  ['only spaces after # escape= is an invalid token', '# escape=  \nFROM scratch\nLABEL a=1\n', {}],
  ['a blank line before # escape= makes it a comment', '\n# escape=`\nFROM scratch\nLABEL a=x`y\n', {}],
  ['flags are case-sensitive', 'FROM scratch AS a\nFROM scratch\nCOPY --FROM=a afile /x\n', {}],
  ['keywords are not', 'FROM scratch\nwOrKdIr /srv/../a\nWORKDIR b\nLABEL a=1\n', {}],
];

describe('engine facts the policy relies on', () => {
  it.each(FACTS)('%s', async (_title, text, buildArgs) => {
    const model = evaluateDockerfile(text, { bases: [], allowRemoteAdd: true, buildArgs });
    const built = await engineBuild(text, buildArgs, { afile: 'hello' });
    made.push(...built.ids);
    expect(built.ok, `${built.error} / ${JSON.stringify(model.violations)}`).toBe(model.violations.length === 0);
    if (!built.ok) return;
    const last = model.stages[model.stages.length - 1]!;
    expect({ labels: built.config?.Labels ?? {}, workdir: built.config?.WorkingDir ?? '' }).toEqual({
      labels: Object.fromEntries([...last.labels].map(([k, v]) => [k, show(v)])),
      workdir: show(last.workdir),
    });
  });
});

describe('the policy expands as the engine does', () => {
  it(`random words, ARG/ENV/WORKDIR/ONBUILD programs and the escape directive (${RUNS} engine builds)`, async () => {
    await fc.assert(
      fc.asyncProperty(program(), async (p) => {
        const text = render(p);
        const model = evaluateDockerfile(text, { bases: [], allowRemoteAdd: true, buildArgs: p.buildArgs });
        const built = await engineBuild(text, p.buildArgs);
        made.push(...built.ids);
        outcomes[built.ok ? 'built' : 'refused']++;
        const ctx = `Dockerfile:\n${text}\nbuild args: ${JSON.stringify(p.buildArgs)}\nmodel: ${JSON.stringify(model.violations)}\nengine: ${built.error ?? 'ok'}`;
        expect(built.ok, ctx).toBe(model.violations.length === 0);
        if (!built.ok) return;
        const last = model.stages[model.stages.length - 1]!;
        expect(last.envOpen).toBe(false);
        expect(
          {
            env: built.config?.Env ?? [],
            labels: built.config?.Labels ?? {},
            workdir: built.config?.WorkingDir ?? '',
            onbuild: built.config?.OnBuild ?? [],
          },
          ctx,
        ).toEqual({
          env: last.env.map(([k, v]) => `${k}=${show(v)}`),
          labels: Object.fromEntries([...last.labels].map(([k, v]) => [k, show(v)])),
          workdir: show(last.workdir),
          onbuild: last.onbuild,
        });
      }),
      { numRuns: RUNS, endOnFailure: true },
    );
  }, 1_800_000);
});
