import { XMLParser } from 'fast-xml-parser';
import { expect } from 'vitest';

/** XML trees as the Jenkins template tests compare them: order kept, entities decoded, comments and CDATA kept apart. */
export type Node = Record<string, unknown>;
const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  parseTagValue: false,
  trimValues: false,
  processEntities: true,
  htmlEntities: true,
  cdataPropName: '#cdata',
  commentPropName: '#comment',
});
export const parse = (xml: string) => parser.parse(xml) as Node[];

/** Text of the first element at `path` (tag names), CDATA included. */
export function textAt(nodes: Node[], pathTags: string[]): string | undefined {
  let cur: Node[] = nodes;
  for (const tag of pathTags) {
    const next = cur.find((n) => tag in n);
    if (!next) return undefined;
    cur = next[tag] as Node[];
  }
  return cur
    .map((n) =>
      typeof n['#text'] === 'string'
        ? n['#text']
        : Array.isArray(n['#cdata'])
          ? (n['#cdata'] as Node[]).map((c) => c['#text']).join('')
          : '',
    )
    .join('');
}

/**
 * Walks template and rendered trees together: same elements, same attributes, same text, except that a template
 * text node holding {{slot}} must equal `expected[slot]` in the rendered tree.
 */
export function compare(tpl: Node[], out: Node[], expected: Record<string, string>, where = ''): void {
  // A slot rendered empty leaves no text node behind.
  const t = tpl.filter(
    (n) =>
      !('#comment' in n) &&
      !(typeof n['#text'] === 'string' && expected[/^\{\{([A-Za-z0-9]+)\}\}$/.exec(n['#text'])?.[1] ?? ''] === ''),
  );
  const o = out.filter((n) => !('#comment' in n));
  expect(o.length, `children of ${where}`).toBe(t.length);
  t.forEach((tn, i) => {
    const on = o[i]!;
    const key = Object.keys(tn).find((k) => k !== ':@')!;
    expect(
      Object.keys(on).find((k) => k !== ':@'),
      `element at ${where}/${i}`,
    ).toBe(key);
    expect(on[':@'], `attributes of ${where}/${key}`).toEqual(tn[':@']);
    if (key === '#text') {
      const m = /^\{\{([A-Za-z0-9]+)\}\}$/.exec(tn[key] as string);
      if (m) expect(on[key], `slot ${m[1]}`).toBe(expected[m[1]!]);
      else expect(on[key], `text at ${where}`).toBe(tn[key]);
    } else if (key === '#cdata') {
      // The script: equal except the two config-derived slots.
      const tplText = (tn[key] as Node[])[0]!['#text'] as string;
      const outText = (on[key] as Node[])[0]!['#text'] as string;
      expect(outText).toBe(
        tplText.replace('{{timeoutSeconds}}', expected.timeoutSeconds!).replace('{{sdkCommand}}', expected.sdkCommand!),
      );
    } else {
      compare(tn[key] as Node[], on[key] as Node[], expected, `${where}/${key}`);
    }
  });
}
