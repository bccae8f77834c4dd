import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { jobSpecSchema, type JobSpec } from '../../src/protocol/index.js';
import {
  describe as describeJob,
  jobTemplate,
  parameterDefaults,
  renderJobXml,
  TIMER_SPECS,
} from '../../src/glue/backends/jenkins/template.js';
import { isKilnError } from '../../src/shared/errors.js';
import { tempDir } from '../helpers/tmp.js';
import { expectedSlots, TEMPLATE_SETTINGS } from '../helpers/job-template.js';
import { compare, parse, textAt, type Node } from '../helpers/xml.js';

const settings = TEMPLATE_SETTINGS;
const spec = (over: Partial<JobSpec> = {}): JobSpec =>
  jobSpecSchema.parse({ owner: 'alice', name: 'web', dockerfile: 'FROM debian:bookworm\n', ...over });

const HOSTILE = [
  '</description><builders><hudson.tasks.Shell><command>id</command></hudson.tasks.Shell></builders><description>',
  ']]><x/>',
  '&xxe; &amp; &#0; <!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
  '"quotes" \'apos\' {{label}} $(id) `id` ${HOME}',
  'tab\tnewline\ncarriage\rreturn',
  'emoji 🦊 and ‘curly’ and \u202e RTL',
];

describe('job template (SECURITY-CHECKLIST 3.2)', () => {
  it('case 32: renders hostile owners and names into well-formed XML equal to the template except the escaped text', () => {
    for (const owner of HOSTILE) {
      const s = { ...spec(), owner: owner.slice(0, 64) };
      const xml = renderJobXml(7, s, settings);
      expect(XMLValidator.validate(xml), owner).toBe(true);
      compare(parse(jobTemplate()), parse(xml), expectedSlots(7, s));
      expect(textAt(parse(xml), ['project', 'description'])).toBe(describeJob(7, s));
    }
  });

  it('keeps hostile Dockerfiles and build arguments out of the XML structure and the script (base64 only)', () => {
    const dockerfile = 'FROM x\nRUN echo "]]></command><x>" $(id) `id` &amp;\n';
    const s = spec({ dockerfile, buildArgs: { A: '"; rm -rf / #', B: '$(id)</defaultValue>' } });
    const xml = renderJobXml(3, s, settings);
    expect(XMLValidator.validate(xml)).toBe(true);
    expect(xml).not.toContain('rm -rf /');
    const tree = parse(xml);
    const params = tree.find((n) => 'project' in n)!.project as Node[];
    expect(params.length).toBe((parse(jobTemplate()).find((n) => 'project' in n)!.project as Node[]).length);
    expect(xml).toContain(`<defaultValue>${Buffer.from(dockerfile).toString('base64')}</defaultValue>`);
    expect(xml).toContain(
      `<defaultValue>${Buffer.from('A="; rm -rf / #\nB=$(id)</defaultValue>\n').toString('base64')}</defaultValue>`,
    );
  });

  it('case 32: rejects C0 control characters and broken Unicode instead of writing them', () => {
    for (const owner of [
      'nul\u0000',
      'bell\u0007',
      'esc\u001b[31m',
      'vt\u000b',
      'ffff\uffff',
      'lone \ud800 surrogate',
    ]) {
      let err: unknown;
      try {
        renderJobXml(1, { ...spec(), owner }, settings);
      } catch (e) {
        err = e;
      }
      expect(isKilnError(err, 'invalid_input'), JSON.stringify(owner)).toBe(true);
    }
  });

  it('case 33: takes the timer spec only from the enum: off, daily, weekly', () => {
    expect(
      textAt(parse(renderJobXml(1, spec({ schedule: 'daily' }), settings)), [
        'project',
        'triggers',
        'hudson.triggers.TimerTrigger',
        'spec',
      ]),
    ).toBe('H H * * *');
    expect(
      textAt(parse(renderJobXml(1, spec({ schedule: 'weekly' }), settings)), [
        'project',
        'triggers',
        'hudson.triggers.TimerTrigger',
        'spec',
      ]),
    ).toBe('H H * * H');
    expect(
      textAt(parse(renderJobXml(1, spec({ schedule: 'off' }), settings)), [
        'project',
        'triggers',
        'hudson.triggers.TimerTrigger',
      ]),
    ).toBeUndefined();
    for (const schedule of ['* * * * *', 'H/1 * * * *', 'H H * * *\n* * * * *']) {
      expect(jobSpecSchema.safeParse({ owner: 'a', name: 'b', dockerfile: 'FROM x', schedule }).success).toBe(false);
      expect(() => renderJobXml(1, { ...spec(), schedule } as unknown as JobSpec, settings)).toThrow(/schedule/);
    }
    expect(Object.values(TIMER_SPECS).filter(Boolean)).toEqual(['H H * * *', 'H H * * H']);
  });

  it('renders disabled, label, discarder and formats; refuses bad settings', () => {
    const xml = parse(
      renderJobXml(1, spec({ enabled: false, formats: ['qcow2', 'raw', 'qcow2'] }), {
        ...settings,
        label: 'kiln && linux',
        keepBuilds: 3,
        retention: { keepBuilds: 2, keepDays: 0 },
      }),
    );
    expect(textAt(xml, ['project', 'disabled'])).toBe('true');
    expect(textAt(xml, ['project', 'assignedNode'])).toBe('kiln && linux');
    expect(
      textAt(xml, ['project', 'properties', 'jenkins.model.BuildDiscarderProperty', 'strategy', 'numToKeep']),
    ).toBe('3');
    expect(
      textAt(xml, ['project', 'properties', 'jenkins.model.BuildDiscarderProperty', 'strategy', 'artifactNumToKeep']),
    ).toBe('2');
    expect(renderJobXml(1, spec({ formats: ['qcow2', 'raw'] }), settings)).toContain(
      '<defaultValue>qcow2,raw</defaultValue>',
    );
    expect(() => renderJobXml(1, spec(), { ...settings, sdkCommand: ["/bin/kiln'; id; '"] })).toThrow(/sdkCommand/);
    expect(() => renderJobXml(1, spec(), { ...settings, sdkCommand: ['/x]]>'] })).toThrow(/sdkCommand/);
    expect(() => renderJobXml(1, spec(), { ...settings, label: 'a\nb' })).toThrow(/label/);
    expect(() => renderJobXml(0, spec(), settings)).toThrow(/job id/);
  });

  it("the discarder is the spec's retention (else the glue's own): artifacts by count and days, records never fewer; 0 is no limit", () => {
    const discarder = (xml: string) => {
      const doc = parse(xml);
      const at = (k: string) =>
        textAt(doc, ['project', 'properties', 'jenkins.model.BuildDiscarderProperty', 'strategy', k]);
      return [at('numToKeep'), at('daysToKeep'), at('artifactNumToKeep'), at('artifactDaysToKeep')];
    };
    // No retention in the spec (a web older than retention): the glue's own, keepBuilds 5.
    expect(discarder(renderJobXml(1, spec(), settings))).toEqual(['20', '-1', '5', '-1']);
    expect(discarder(renderJobXml(1, spec({ retention: { keepBuilds: 3, keepDays: 14 } }), settings))).toEqual([
      '20',
      '-1',
      '3',
      '14',
    ]);
    // Artifacts of 50 builds kept: so are 50 records at least, whatever glue.jenkins.keepBuilds says.
    expect(discarder(renderJobXml(1, spec({ retention: { keepBuilds: 50, keepDays: 0 } }), settings))).toEqual([
      '50',
      '-1',
      '50',
      '-1',
    ]);
    // No count limit on artifacts: none on records either (a record goes with its artifacts).
    expect(discarder(renderJobXml(1, spec({ retention: { keepBuilds: 0, keepDays: 7 } }), settings))).toEqual([
      '-1',
      '-1',
      '-1',
      '7',
    ]);
    expect(() =>
      jobSpecSchema.parse({ owner: 'a', name: 'b', dockerfile: 'FROM x', retention: { keepBuilds: -1, keepDays: 0 } }),
    ).toThrow();
  });

  it('a git source travels as SOURCE_B64 (schema-checked JSON), reaches the SDK as --source in/source.json, and a hostile value stops the step', () => {
    const source = {
      type: 'git' as const,
      url: 'https://git.example.com/team/images.git',
      ref: 'main',
      commit: 'c'.repeat(40),
      path: 'docker/Dockerfile',
      context: 'docker',
    };
    const xml = renderJobXml(1, spec({ source }), settings);
    expect(JSON.parse(Buffer.from(parameterDefaults(xml).SOURCE_B64!, 'base64').toString('utf8'))).toEqual(source);
    expect(parameterDefaults(renderJobXml(1, spec(), settings)).SOURCE_B64).toBe('');
    const { dir, cleanup } = tempDir();
    try {
      const fake = path.join(dir, 'fake-sdk');
      writeFileSync(
        fake,
        '#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done > args.txt\ncp in/source.json out/\n',
      );
      chmodSync(fake, 0o755);
      const ws = path.join(dir, 'ws');
      mkdirSync(ws);
      const script = textAt(parse(renderJobXml(1, spec({ source }), { ...settings, sdkCommand: [fake] })), [
        'project',
        'builders',
        'hudson.tasks.Shell',
        'command',
      ])!;
      const env = {
        PATH: process.env.PATH,
        ...parameterDefaults(renderJobXml(1, spec({ source }), settings)),
      };
      const r = spawnSync('/bin/sh', ['-e', '-c', script], { cwd: ws, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(path.join(ws, 'args.txt'), 'utf8')).toContain('<--source>\n<in/source.json>\n');
      expect(JSON.parse(readFileSync(path.join(ws, 'out/source.json'), 'utf8'))).toEqual(source);
      const bad = spawnSync('/bin/sh', ['-e', '-c', script], {
        cwd: ws,
        env: { ...env, SOURCE_B64: '$(id)' },
        encoding: 'utf8',
      });
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain('SOURCE_B64 is not base64');
    } finally {
      cleanup();
    }
  });

  it('the constant shell step decodes parameters into files and passes them as quoted argv only', () => {
    const { dir, cleanup } = tempDir();
    try {
      const fake = path.join(dir, 'fake-sdk');
      writeFileSync(
        fake,
        '#!/bin/sh\nfor a in "$@"; do printf "<%s>\\n" "$a"; done > args.txt\ncp in/Dockerfile out/Dockerfile.seen\n',
      );
      chmodSync(fake, 0o755);
      const ws = path.join(dir, 'ws');
      mkdirSync(ws);
      const xml = renderJobXml(1, spec({ baseNames: [{ name: 'corp/debian:12', base: 'debian:bookworm' }] }), {
        ...settings,
        sdkCommand: [fake],
      });
      expect(Buffer.from(parameterDefaults(xml).BASE_NAMES_B64!, 'base64').toString()).toBe(
        'corp/debian:12=debian:bookworm\n',
      );
      const script = textAt(parse(xml), ['project', 'builders', 'hudson.tasks.Shell', 'command'])!;
      const dockerfile = 'FROM x\nRUN echo $(id) `id` "\'\n';
      const env = {
        PATH: process.env.PATH,
        DOCKERFILE_B64: Buffer.from(dockerfile).toString('base64'),
        CONTEXT_B64: Buffer.from('tar').toString('base64'),
        BUILD_ARGS_B64: Buffer.from('A=$(touch pwned) ; x\nB=2\n').toString('base64'),
        FORMATS: 'raw,qcow2',
        KILN_BUILD_KEY: 'k',
        BASE_NAMES_B64: Buffer.from('corp/debian:12=debian:bookworm\n').toString('base64'),
      };
      const r = spawnSync('/bin/sh', ['-xe', '-c', script], { cwd: ws, env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(readFileSync(path.join(ws, 'args.txt'), 'utf8')).toBe(
        [
          '--dockerfile',
          'in/Dockerfile',
          '--out',
          'out',
          '--context',
          'in/context.tar',
          '--format',
          'raw,qcow2',
          '--build-arg',
          'A=$(touch pwned) ; x',
          '--build-arg',
          'B=2',
          '--base-name',
          'corp/debian:12=debian:bookworm',
        ]
          .map((a) => `<${a}>\n`)
          .join(''),
      );
      expect(readFileSync(path.join(ws, 'out/Dockerfile.seen'), 'utf8')).toBe(dockerfile);
      expect(spawnSync('ls', [ws]).stdout.toString()).not.toContain('pwned');
      const bad = spawnSync('/bin/sh', ['-xe', '-c', script], {
        cwd: ws,
        env: { ...env, FORMATS: 'raw;id' },
        encoding: 'utf8',
      });
      expect(bad.status).toBe(2);
      const bad2 = spawnSync('/bin/sh', ['-xe', '-c', script], {
        cwd: ws,
        env: { ...env, FORMATS: 'raw,evil' },
        encoding: 'utf8',
      });
      expect(bad2.status).toBe(2);
      // A base-name line a parameter edit in Jenkins could hold: never a word of its own, never a shell word.
      for (const line of ['x=$(id)', '-x=debian:bookworm', 'a b=debian:bookworm', 'debian:bookworm']) {
        const b = spawnSync('/bin/sh', ['-xe', '-c', script], {
          cwd: ws,
          env: { ...env, BASE_NAMES_B64: Buffer.from(`${line}\n`).toString('base64') },
          encoding: 'utf8',
        });
        expect(b.status, line).toBe(2);
        expect(b.stderr).toContain('kiln: bad base name');
      }
      expect(() =>
        renderJobXml(1, { ...spec(), baseNames: [{ name: 'x y', base: 'debian:bookworm' }] }, settings),
      ).toThrow(/base name/);
    } finally {
      cleanup();
    }
  });
});
