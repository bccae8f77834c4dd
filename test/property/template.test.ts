/**
 * Property test of config.xml rendering (src/glue/backends/jenkins/template.ts): whatever text a user controls
 * (owner, Dockerfile name, Dockerfile, build arguments), the document parses and has exactly the template's
 * structure, the description reads back as the exact text, and what XML cannot carry is refused.
 */
import fc from 'fast-check';
import { XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { describe as describeJob, jobTemplate, renderJobXml } from '../../src/glue/backends/jenkins/template.js';
import type { JobSpec } from '../../src/protocol/index.js';
import { KilnError } from '../../src/shared/errors.js';
import { expectedSlots, TEMPLATE_SETTINGS } from '../helpers/job-template.js';
import { compare, parse, textAt } from '../helpers/xml.js';

const settings = TEMPLATE_SETTINGS;

const FRAGMENTS = [
  '<',
  '>',
  '&',
  '"',
  "'",
  ']]>',
  '<![CDATA[',
  '<!--',
  '-->',
  '&amp;',
  '&#0;',
  '&#x1F;',
  '&lt;',
  '&xxe;',
  '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
  '{{label}}',
  '{{description}}',
  '{{sdkCommand}}',
  '$(id)',
  '`id`',
  '</description>',
  '<x/>',
  '\r',
  '\n',
  '\t',
  '\r\n',
  '\u0000',
  '\u0007',
  '\u000b',
  '\u001b[31m',
  '\u007f',
  '\u0085',
  '\u2028',
  '\ufffe',
  '\uffff',
  '\ud800',
  '\udc00',
  '\ud83e\udd8a',
  '\u202e',
  '\u00a0',
  '\ufeff',
  'é',
  ' ',
];
const hostile = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 64 }),
  fc
    .array(fc.oneof(fc.constantFrom(...FRAGMENTS), fc.string({ maxLength: 4 })), { maxLength: 12 })
    .map((a) => a.join('')),
);

// XML 1.0 characters minus the C0 controls Jenkins cannot persist (TAB, LF, CR are fine).

const NOT_XML =
  // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
  /[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

describe('config.xml rendering (property)', () => {
  it("hostile owner, name, Dockerfile and build arguments: the template's structure and the exact text, or invalid_input", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 999_999_999_999 }),
        hostile.filter((s) => s.length > 0),
        hostile.filter((s) => s.length > 0),
        hostile.filter((s) => s.length > 0),
        fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,8}$/), hostile, { maxKeys: 3 }),
        (job, owner, name, dockerfile, buildArgs) => {
          const spec: JobSpec = {
            owner,
            name,
            dockerfile,
            buildArgs,
            formats: ['raw'],
            schedule: 'off',
            enabled: true,
          };
          const refuse =
            NOT_XML.test(owner) ||
            NOT_XML.test(name) ||
            NOT_XML.test(dockerfile) ||
            Object.values(buildArgs).some((v) => CONTROL.test(v));
          let xml: string;
          try {
            xml = renderJobXml(job, spec, settings);
          } catch (e) {
            expect(e, `${JSON.stringify({ owner, name, dockerfile, buildArgs })} threw ${String(e)}`).toBeInstanceOf(
              KilnError,
            );
            expect((e as KilnError).code).toBe('invalid_input');
            expect(
              refuse,
              `refused a renderable spec: ${JSON.stringify({ owner, name, dockerfile, buildArgs })}: ${(e as Error).message}`,
            ).toBe(true);
            return;
          }
          expect(refuse, `rendered what XML cannot carry: ${JSON.stringify({ owner, name, dockerfile })}`).toBe(false);
          expect(XMLValidator.validate(xml)).toBe(true);
          compare(parse(jobTemplate()), parse(xml), expectedSlots(job, spec));
          expect(textAt(parse(xml), ['project', 'description'])).toBe(describeJob(job, spec));
        },
      ),
      { numRuns: 600 },
    );
  });
});
