/**
 * The parts of following a Dockerfile that need no site: the Atom writer keeps any text (controls, surrogates,
 * markup, CDATA ends) from breaking or entering the XML, checked by a real XML parser on random input; and the
 * webhook address rules (src/shared/addresses.ts through following/net.ts) with an admin's allow list.
 */
import fc from 'fast-check';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { renderAtom } from '../../src/core/following/atom.js';
import { checkedWebhookAddress, parseWebhookUrl } from '../../src/core/following/net.js';
import { KilnError } from '../../src/shared/errors.js';

const feed = (text: string) =>
  renderAtom({
    id: 'http://kiln.test/feeds/user.atom',
    title: text,
    updated: '2026-11-26T12:00:00.000Z',
    self: `http://kiln.test/feeds/user.atom?x=${text}`,
    alternate: 'http://kiln.test/builds',
    entries: [
      {
        id: 'http://kiln.test/builds/1',
        title: text,
        updated: '2026-11-26T12:00:00.000Z',
        published: '2026-11-26T11:00:00.000Z',
        link: 'http://kiln.test/builds/1',
        author: text,
        categories: [{ scheme: 'https://kiln.dev/ns/state', term: text }],
        content: text,
      },
    ],
  });

// What XML 1.0 can carry: the writer drops the rest, and keeps everything else exactly.
// eslint-disable-next-line no-control-regex
const xmlable = (s: string) => s.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udfff]/g, '');

describe('the Atom writer', () => {
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@',
    trimValues: false,
    parseTagValue: false,
    isArray: (n) => n === 'entry',
  });
  it('any text (markup, entities, CDATA ends, controls, lone surrogates) stays text: the document is well-formed and reads back as the text', () => {
    const hostile = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 80 }),
      fc.constantFrom('<script>alert(1)</script>', ']]>', '&amp;&lt;', '"\'><entry>', '\u0000\u0007\ud800x', '\r\n\t'),
    );
    fc.assert(
      fc.property(hostile, (text) => {
        const xml = feed(text);
        expect(XMLValidator.validate(xml)).toBe(true);
        const f = parser.parse(xml).feed;
        const e = f.entry[0];
        // Well-formed whatever the input; text with surrogate pairs or line ends is compared without them
        // (XML normalises CR and the parser's own handling of astral characters is not what is tested here).
        const want = xmlable(text);
        if (!/[\r\ud800-\udfff]/.test(text)) {
          expect(e.content['#text'] ?? '').toBe(want);
          expect(e.category['@term']).toBe(want);
        }
        expect(xml.match(/<entry>/g)).toHaveLength(1);
      }),
      { numRuns: 300 },
    );
  });
});

describe('webhook URLs and addresses', () => {
  const config = (allowHosts: string[] = []) => loadConfig({}, { webhooks: { allowHosts } });
  const refusal = async (url: string, lookup: (h: string) => Promise<string[]>, allow: string[] = []) => {
    try {
      await checkedWebhookAddress(config(allow), parseWebhookUrl(url), lookup);
      return 'ok';
    } catch (e) {
      return e instanceof KilnError ? e.code : String(e);
    }
  };
  it("refuses loopback, link-local, private, ULA, shared and this machine's addresses; an admin may allow a host or address", async () => {
    const to = (a: string[]) => async () => a;
    for (const a of [
      '127.0.0.1',
      '169.254.169.254',
      '10.0.0.1',
      '172.16.5.5',
      '192.168.0.10',
      '100.64.0.1',
      '0.0.0.0',
      '::1',
      'fe80::1',
      'fc00::1',
      '::ffff:10.0.0.1',
    ])
      expect(`${a} ${await refusal('https://hooks.example/x', to([a]))}`).toBe(`${a} forbidden`);
    expect(await refusal('https://hooks.example/x', to(['93.184.216.34']))).toBe('ok');
    expect(await refusal('https://hooks.example/x', to(['93.184.216.34', '10.0.0.1']))).toBe('forbidden');
    expect(await refusal('http://127.0.0.1:8080/x', to([]), ['127.0.0.1'])).toBe('ok');
    expect(await refusal('https://hooks.internal/x', to(['10.0.0.7']), ['hooks.internal'])).toBe('ok');
    expect(await refusal('https://hooks.internal/x', to(['10.0.0.7']), ['10.0.0.0/24'])).toBe('ok');
    expect(await refusal('https://hooks.internal/x', to(['10.0.1.7']), ['10.0.0.0/24'])).toBe('forbidden');
  });
  it('takes http(s) only, without credentials; drops the fragment', () => {
    expect(parseWebhookUrl('https://hooks.example/a?b=1#frag').href).toBe('https://hooks.example/a?b=1');
    for (const bad of [
      'gopher://x/',
      'file:///etc/passwd',
      'https://u:p@x/',
      'https://u@x/',
      '',
      ' ',
      'http://x/\ny',
      'http://x y/',
    ])
      expect(() => parseWebhookUrl(bad)).toThrow(KilnError);
    expect(() => parseWebhookUrl(`https://x/${'a'.repeat(3000)}`)).toThrow(/longer than/);
  });
});
