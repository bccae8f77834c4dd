import { describe, expect, it } from 'vitest';
import { DEFAULT_BASES, DEFAULT_BASE_NAMES, loadConfig } from '../../src/config/index.js';
import { BaseNames, baseNameList, parseBaseNameEntry } from '../../src/dockerfile/base-names.js';
import { parseDockerfile } from '../../src/dockerfile/parse.js';
import { pinBaseImages } from '../../src/dockerfile/pin.js';
import { checkDockerfile, kilnBaseConfigs, type PolicyOptions } from '../../src/dockerfile/policy.js';
import { isKilnError } from '../../src/shared/errors.js';

/** The shipped defaults, as a build host without base-name settings has them. */
const bases = DEFAULT_BASES;
const opts = (site: { name: string; base: string }[] = [], extra: Partial<PolicyOptions> = {}): PolicyOptions => ({
  bases,
  baseNames: baseNameList(site, DEFAULT_BASE_NAMES),
  allowRemoteAdd: false,
  baseConfigs: kilnBaseConfigs(bases),
  ...extra,
});

function refused(text: string, o: PolicyOptions = opts()): { line: number; message: string }[] {
  try {
    checkDockerfile(text, o);
  } catch (e) {
    expect(isKilnError(e, 'policy_violation')).toBe(true);
    return (e as { detail: { line: number; message: string }[] }).detail;
  }
  throw new Error(`expected a refusal of ${JSON.stringify(text)}`);
}

const from = (image: string, o?: PolicyOptions) => checkDockerfile(`FROM ${image}\nRUN true\n`, o ?? opts()).froms[0]!;

describe('base names as CI writes them (shipped defaults)', () => {
  it('the defaults are what config loads without settings', () => {
    const s = loadConfig({}).sdk;
    expect(s.bases).toEqual(DEFAULT_BASES);
    expect(s.baseNames).toEqual(DEFAULT_BASE_NAMES);
  });

  it.each([
    // [as written, Kiln base, how]
    ['debian:bookworm', 'debian:bookworm', 'base'],
    ['debian:trixie', 'debian:trixie', 'base'],
    ['debian:bookworm-slim', 'debian:bookworm-slim', 'base'],
    ['debian:trixie-slim', 'debian:trixie-slim', 'base'],
    ['debian:12', 'debian:bookworm', 'name'],
    ['debian:13', 'debian:trixie', 'name'],
    ['debian:12-slim', 'debian:bookworm-slim', 'name'],
    ['debian:13-slim', 'debian:trixie-slim', 'name'],
    ['debian:stable', 'debian:trixie', 'name'],
    ['debian:oldstable', 'debian:bookworm', 'name'],
    ['debian:stable-slim', 'debian:trixie-slim', 'name'],
    ['debian:oldstable-slim', 'debian:bookworm-slim', 'name'],
    ['debian:latest', 'debian:trixie', 'name'],
    ['debian', 'debian:trixie', 'name'],
    ['debian:12.5', 'debian:bookworm', 'point-release'],
    ['debian:12.11', 'debian:bookworm', 'point-release'],
    ['debian:13.2', 'debian:trixie', 'point-release'],
    ['debian:12.5-slim', 'debian:bookworm-slim', 'point-release'],
    ['debian:bookworm-20240513', 'debian:bookworm', 'dated-tag'],
    ['debian:bookworm-20240513-slim', 'debian:bookworm-slim', 'dated-tag'],
    ['debian:trixie-20261110', 'debian:trixie', 'dated-tag'],
    ['docker.io/library/debian:12', 'debian:bookworm', 'name'],
    ['library/debian:12', 'debian:bookworm', 'name'],
    ['index.docker.io/library/debian:12', 'debian:bookworm', 'name'],
    ['docker.io/library/debian:bookworm-slim', 'debian:bookworm-slim', 'base'],
    ['docker.io/library/debian:12.5-slim', 'debian:bookworm-slim', 'point-release'],
    ['index.docker.io/library/debian:stable', 'debian:trixie', 'name'],
  ])('FROM %s -> %s (%s)', (image, base, via) => {
    const f = from(image);
    expect(f).toMatchObject({ base, via, image, written: image, line: 1 });
    if (via === 'name') expect(f.source).toBe('config');
  });

  it('a point release or dated tag names the release it belongs to', () => {
    expect(from('debian:12.5').name).toBe('debian:12');
    expect(from('debian:12.5-slim').name).toBe('debian:12-slim');
    expect(from('debian:bookworm-20240513').name).toBe('debian:bookworm');
  });

  it.each([
    'debian:11',
    'debian:bullseye',
    'debian:sid',
    'debian:testing',
    'debian:experimental',
    'debian:BOOKWORM',
    'debian:12.x',
    'debian:bookworm-2024',
    'ubuntu:24.04',
    'alpine',
    'quay.io/debian:12',
    'registry.example:5000/library/debian:12',
    'debian:latest-slim',
  ])('refuses FROM %s, listing every accepted name', (image) => {
    const v = refused(`FROM ${image}\n`);
    expect(v).toHaveLength(1);
    expect(v[0]!.line).toBe(1);
    expect(v[0]!.message).toContain(`FROM ${image} is not an allowed base image; allowed: `);
    expect(v[0]!.message).toContain('debian:bookworm (or debian:12, debian:oldstable)');
    expect(v[0]!.message).toContain('debian:bookworm-slim (or debian:12-slim, debian:oldstable-slim)');
    expect(v[0]!.message).toContain('debian:trixie (or debian:13, debian:latest, debian:stable)');
    expect(v[0]!.message).toContain('debian:trixie-slim (or debian:13-slim, debian:stable-slim)');
    expect(v[0]!.message).toContain('a point release (12.5 for 12) or a dated tag (bookworm-20240513 for bookworm)');
  });

  it.each([
    [`debian:12@sha256:${'a'.repeat(64)}`, "debian:12 means Kiln's base debian:bookworm"],
    [
      `docker.io/library/debian:bookworm-slim@sha256:${'b'.repeat(64)}`,
      "debian:bookworm-slim means Kiln's base debian:bookworm-slim",
    ],
    [`debian@sha256:${'c'.repeat(64)}`, "debian:latest means Kiln's base debian:trixie"],
  ])('refuses a digest, saying why and what the name without it means: %s', (image, means) => {
    const v = refused(`FROM ${image}\n`);
    expect(v[0]!.message).toContain('names an image by digest');
    expect(v[0]!.message).toContain("Docker Hub's exact bytes, which Kiln never uses");
    expect(v[0]!.message).toContain(means);
  });

  it('ARG-expanded FROMs resolve as the builder expands them, build args included', () => {
    const text =
      'ARG V=12\nFROM debian:${V} AS build\nRUN true\nFROM debian:${V}-slim\nCOPY --from=build /etc/hostname /x\n';
    const r = checkDockerfile(text, opts());
    expect(r.bases.sort()).toEqual(['debian:bookworm', 'debian:bookworm-slim']);
    expect(r.froms).toEqual([
      expect.objectContaining({
        line: 2,
        endLine: 2,
        stage: 'build',
        written: 'debian:${V}',
        image: 'debian:12',
        base: 'debian:bookworm',
        via: 'name',
      }),
      expect.objectContaining({
        line: 4,
        written: 'debian:${V}-slim',
        image: 'debian:12-slim',
        base: 'debian:bookworm-slim',
      }),
    ]);
    const r13 = checkDockerfile(text, { ...opts(), buildArgs: { V: '13.1' } });
    expect(r13.froms.map((f) => [f.image, f.base, f.via])).toEqual([
      ['debian:13.1', 'debian:trixie', 'point-release'],
      ['debian:13.1-slim', 'debian:trixie-slim', 'point-release'],
    ]);
    expect(refused(text, { ...opts(), buildArgs: { V: '11' } }).map((v) => v.line)).toEqual([2, 4]);
  });

  it('a stage name wins over a base name, as in the builder', () => {
    const r = checkDockerfile('FROM debian:12 AS debian\nRUN true\nFROM debian\n', opts());
    expect(r.froms).toHaveLength(1);
    expect(r.stages).toBe(2);
  });
});

describe("the site admin's names", () => {
  it('map other names to allowed bases, and win over sdk.baseNames', () => {
    const site = [
      { name: 'corp.example/base/debian:12', base: 'debian:bookworm' },
      { name: 'debian:latest', base: 'debian:bookworm' },
    ];
    expect(from('corp.example/base/debian:12', opts(site))).toMatchObject({
      base: 'debian:bookworm',
      via: 'name',
      source: 'site',
      name: 'corp.example/base/debian:12',
    });
    expect(from('corp.example/base/debian:12.4', opts(site))).toMatchObject({
      base: 'debian:bookworm',
      via: 'point-release',
      source: 'site',
    });
    expect(from('debian:latest', opts(site))).toMatchObject({ base: 'debian:bookworm', source: 'site' });
    expect(from('debian:stable', opts(site))).toMatchObject({ base: 'debian:trixie', source: 'config' });
    const v = refused('FROM alpine\n', opts(site));
    expect(v[0]!.message).toContain(
      'debian:bookworm (or corp.example/base/debian:12, debian:12, debian:latest, debian:oldstable)',
    );
  });

  it('can never widen what the build host runs: a name leading to a base outside sdk.bases is refused where it is used', () => {
    const site = [{ name: 'corp/debian:unstable', base: 'debian:sid' }];
    const v = refused('FROM corp/debian:unstable\n', opts(site));
    expect(v[0]!.message).toBe(
      "FROM corp/debian:unstable is not an allowed base image: the site's admin maps it to debian:sid, which this build host does not allow " +
        '(sdk.bases: debian:bookworm, debian:trixie, debian:bookworm-slim, debian:trixie-slim)',
    );
    // It is not listed as accepted either, and the other FROMs are unaffected.
    expect(refused('FROM alpine\n', opts(site))[0]!.message).not.toContain('corp/debian');
    expect(checkDockerfile('FROM debian:12\n', opts(site)).bases).toEqual(['debian:bookworm']);
    // A default whose base the host does not allow: the same.
    const narrow = { ...opts(), bases: ['debian:bookworm'], baseConfigs: kilnBaseConfigs(['debian:bookworm']) };
    expect(refused('FROM debian:stable\n', narrow)[0]!.message).toContain(
      'sdk.baseNames maps it to debian:trixie, which this build host does not allow (sdk.bases: debian:bookworm)',
    );
  });

  it('ignores mappings that could never match, saying why', () => {
    const t = new BaseNames(bases, [
      { name: `debian:12@sha256:${'a'.repeat(64)}`, base: 'debian:bookworm', source: 'site' },
      { name: 'debian:bookworm', base: 'debian:trixie', source: 'site' },
      { name: 'Not A Name', base: 'debian:trixie', source: 'site' },
    ]);
    expect(t.ignored.map((i) => i.reason)).toEqual([
      expect.stringContaining('carries a digest'),
      'debian:bookworm is an allowed base itself',
      'Not A Name is not an image name',
    ]);
    expect('match' in t.resolve('debian:bookworm') && t.resolve('debian:bookworm')).toMatchObject({
      match: { base: 'debian:bookworm', via: 'base' },
    });
  });

  it('entries read as name=base', () => {
    expect(parseBaseNameEntry('debian:12=debian:bookworm', 'config')).toEqual({
      name: 'debian:12',
      base: 'debian:bookworm',
      source: 'config',
    });
    for (const bad of ['debian:12', '=debian:bookworm', 'debian:12=', 'a=b=c'])
      expect(parseBaseNameEntry(bad, 'site'), bad).toBeUndefined();
  });

  it('sdk.baseNames is validated when the config loads', () => {
    expect(loadConfig({ KILN_SDK_BASE_NAMES: 'corp/debian:12=debian:bookworm' }).sdk.baseNames).toEqual([
      'corp/debian:12=debian:bookworm',
    ]);
    expect(() => loadConfig({ KILN_SDK_BASE_NAMES: 'debian:12' })).toThrow(/KILN_SDK_BASE_NAMES/);
    expect(() => loadConfig({ KILN_SDK_BASE_NAMES: `debian:12@sha256:${'a'.repeat(64)}=debian:bookworm` })).toThrow(
      /KILN_SDK_BASE_NAMES/,
    );
  });
});

describe('the Dockerfile the engine gets: each base FROM pinned to its image id', () => {
  const ids = {
    'debian:bookworm': `sha256:${'1'.repeat(64)}`,
    'debian:bookworm-slim': `sha256:${'2'.repeat(64)}`,
    'debian:trixie': `sha256:${'3'.repeat(64)}`,
  };

  it('replaces only the FROM words, keeps stage names and every line number', () => {
    const text = [
      '# escape=\\',
      'ARG V=12',
      'FROM docker.io/library/debian:${V}-slim \\',
      '  # a comment inside',
      '  AS Build',
      'RUN echo $V > /v',
      'FROM build AS again',
      'FROM debian:stable',
      'COPY --from=again /v /v',
      'FROM scratch',
      'COPY --from=build /v /v',
      '',
    ].join('\r\n');
    const r = checkDockerfile(text, opts());
    const out = pinBaseImages(text, r.froms, ids);
    const lines = out.split('\n');
    expect(lines).toHaveLength(text.split('\n').length);
    expect(lines[2]).toBe(`FROM ${ids['debian:bookworm-slim']} AS build`);
    expect(lines[3]).toBe('');
    expect(lines[4]).toBe('');
    expect(lines[7]).toBe(`FROM ${ids['debian:trixie']}`);
    const before = parseDockerfile(text).nodes;
    const after = parseDockerfile(out).nodes;
    expect(after.map((n) => [n.keyword, n.startLine])).toEqual(before.map((n) => [n.keyword, n.startLine]));
    expect(after.filter((n) => n.keyword !== 'from').map((n) => n.original)).toEqual(
      before.filter((n) => n.keyword !== 'from').map((n) => n.original),
    );
    // What the engine gets passes the same policy with the ids standing for the bases: nothing else to pull.
    expect(after.filter((n) => n.keyword === 'from').map((n) => n.args[0])).toEqual([
      ids['debian:bookworm-slim'],
      'build',
      ids['debian:trixie'],
      'scratch',
    ]);
  });

  it('refuses to pin without a real image id', () => {
    const r = checkDockerfile('FROM debian:12\n', opts());
    expect(() => pinBaseImages('FROM debian:12\n', r.froms, {})).toThrow(/No image id/);
    expect(() => pinBaseImages('FROM debian:12\n', r.froms, { 'debian:bookworm': 'debian:bookworm' })).toThrow(
      /No image id/,
    );
  });
});
