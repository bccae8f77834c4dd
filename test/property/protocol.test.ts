/**
 * Property tests of the web<->glue command line (src/protocol parseCommand/formatCommand) and of the dispatcher's
 * promise that a refused line reaches no backend. fast-check shrinks a failure to its smallest line.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGlue, type Glue } from '../../src/glue/dispatch.js';
import { LocalBackend } from '../../src/glue/backends/local/index.js';
import {
  ARTIFACT_NAMES,
  IDEMPOTENCY_KEY_RE,
  MAX_COMMAND_BYTES,
  formatCommand,
  parseCommand,
  type Verb,
} from '../../src/protocol/index.js';
import { KilnError, isKilnError } from '../../src/shared/errors.js';
import { silentLogger } from '../../src/shared/logger.js';
import { recording } from '../helpers/glue.js';
import { tempDir } from '../helpers/tmp.js';

const id = fc.integer({ min: 1, max: 999_999_999_999 });
const key = fc.stringMatching(IDEMPOTENCY_KEY_RE);
const offset = fc.integer({ min: 0, max: 999_999_999_999_999 });
const artifact = fc.constantFrom(...ARTIFACT_NAMES);

/** Every verb with arguments its schema accepts. */
const request: fc.Arbitrary<[Verb, ...Array<string | number>]> = fc.oneof(
  fc.constantFrom<[Verb]>(['ping'], ['jobs.list'], ['queue.list']),
  fc.tuple(fc.constantFrom<Verb>('job.put', 'job.enable', 'job.disable', 'job.delete'), id),
  fc.tuple(fc.constantFrom<Verb>('job.build', 'build.withdraw'), id, key),
  fc.tuple(fc.constant<Verb>('job.build'), id, key, fc.stringMatching(/^[0-9a-f]{64}$/)),
  fc.tuple(fc.constantFrom<Verb>('build.status', 'build.cancel', 'build.discard'), id, id),
  fc.tuple(fc.constant<Verb>('build.keep'), id, id, fc.constantFrom('on', 'off')),
  fc.tuple(fc.constant<Verb>('build.log'), id, id, offset),
  fc.tuple(fc.constant<Verb>('build.artifact'), id, id, artifact),
  fc.tuple(fc.constant<Verb>('build.artifact'), id, id, artifact, offset),
);
const validLine = request.map(([verb, ...args]) => [verb, ...args.map(String)].join(' '));

/** What an attacker would try inside or around a valid line. */
const HOSTILE = [
  ' ',
  '  ',
  '\t',
  '\n',
  '\r',
  '\0',
  ';',
  '|',
  '&',
  '$(id)',
  '`id`',
  "'",
  '"',
  '\\',
  '/',
  '../',
  '-',
  '--x',
  '%00',
  '\u202e',
  '\u00a0',
  '\ufeff',
  'é',
  '🦊',
  '\ud800',
  '0',
  '01',
  '-1',
  '1e309',
  '9007199254740993',
  '__proto__',
  'constructor',
];
const mutated = fc
  .tuple(validLine, fc.nat(), fc.constantFrom(...HOSTILE), fc.boolean())
  .map(([line, at, bit, replace]) => {
    const i = at % (line.length + 1);
    return line.slice(0, i) + bit + line.slice(replace ? i + 1 : i);
  });
const anyLine = fc.oneof(
  { weight: 3, arbitrary: mutated },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 320 }) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: fc.constantFrom(...'abjobuildstatus.-_ 0123456789'.split('')), maxLength: 80 }),
  },
  { weight: 1, arbitrary: validLine },
);
const anyBytes = fc.oneof(
  fc.uint8Array({ maxLength: 320 }).map((a) => Buffer.from(a)),
  fc
    .tuple(validLine, fc.uint8Array({ minLength: 1, maxLength: 4 }))
    .map(([l, tail]) => Buffer.concat([Buffer.from(l), Buffer.from(tail)])),
);

/** parseCommand's whole contract for one input: a request whose canonical line is the input, or invalid_input. */
function parsesCanonicallyOrRefuses(line: string | Buffer): void {
  let parsed: ReturnType<typeof parseCommand> | undefined;
  try {
    parsed = parseCommand(line);
  } catch (e) {
    expect(e).toBeInstanceOf(KilnError);
    expect((e as KilnError).code).toBe('invalid_input');
    return;
  }
  const text = Buffer.isBuffer(line) ? line.toString('utf8') : line;
  // Accepted means canonical: one spelling per request, so nothing else can hide in an accepted line.
  expect(formatCommand(parsed.verb, ...(parsed.args as Array<string | number>))).toBe(text);
  expect(Buffer.byteLength(text)).toBeLessThanOrEqual(MAX_COMMAND_BYTES);
}

describe('glue protocol parser (property)', () => {
  it('formatCommand then parseCommand gives back every valid request', () => {
    fc.assert(
      fc.property(request, ([verb, ...args]) => {
        const line = formatCommand(verb, ...args);
        expect(parseCommand(line)).toEqual({ verb, args });
        expect(parseCommand(Buffer.from(line))).toEqual({ verb, args });
      }),
      { numRuns: 2000 },
    );
  });

  it('any string: a canonical request or KilnError invalid_input, nothing else thrown', () => {
    fc.assert(fc.property(anyLine, parsesCanonicallyOrRefuses), { numRuns: 5000 });
  });

  it('any bytes: a canonical request or KilnError invalid_input, nothing else thrown', () => {
    fc.assert(fc.property(anyBytes, parsesCanonicallyOrRefuses), { numRuns: 3000 });
  });

  it('formatCommand refuses (invalid_input) whatever parseCommand would refuse', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<Verb>('job.put', 'job.build', 'build.log', 'build.artifact'),
        fc.array(fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), fc.double(), fc.integer())),
        (verb, args) => {
          let line: string | undefined;
          try {
            line = formatCommand(verb, ...args);
          } catch (e) {
            expect(isKilnError(e, 'invalid_input')).toBe(true);
            return;
          }
          expect(parseCommand(line).verb).toBe(verb);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('glue dispatcher (property): a refused line never reaches dispatch', () => {
  const tmp = tempDir('kiln-prop-glue-');
  let backend: LocalBackend;
  let glue: Glue;
  let calls: string[];

  beforeAll(async () => {
    backend = new LocalBackend({ dataDir: tmp.dir, runner: false, logger: silentLogger });
    await backend.start();
    const rec = recording(backend);
    calls = rec.calls;
    glue = createGlue({ backend: rec.backend, logger: silentLogger });
  });
  afterAll(async () => {
    await backend?.close();
    tmp.cleanup();
  });

  it('refused lines: invalid_input, no backend call, no stdin read', async () => {
    const refused = fc.oneof(anyLine, anyBytes).filter((l) => {
      try {
        parseCommand(l);
        return false;
      } catch {
        return true;
      }
    });
    await fc.assert(
      fc.asyncProperty(refused, async (line) => {
        let stdinRead = false;
        const err = await glue
          .handle(
            line,
            async () => {
              stdinRead = true;
              return Buffer.from('{}');
            },
            { door: 'property' },
          )
          .then(
            () => undefined,
            (e: unknown) => e,
          );
        expect(isKilnError(err, 'invalid_input')).toBe(true);
        expect(stdinRead).toBe(false);
        expect(calls).toEqual([]);
      }),
      { numRuns: 1500 },
    );
  });
});
