/**
 * A small Atom (RFC 4287) writer. Every text and attribute value goes through `esc`: the five XML specials become
 * entities, and characters XML 1.0 cannot carry at all (C0 controls but tab, LF and CR; U+FFFE/U+FFFF; lone
 * surrogates) are dropped, so no user text (a Dockerfile name, a build's reason, a package version) can end an
 * element, open one, or make the document ill-formed.
 */
const NOT_XML =
  // eslint-disable-next-line no-control-regex
  /[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

export function esc(v: string | number): string {
  return String(v)
    .replace(NOT_XML, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

export interface AtomEntry {
  id: string;
  title: string;
  updated: string;
  published: string;
  link: string;
  author: string;
  categories: Array<{ scheme: string; term: string }>;
  /** Plain text (type="text"): readers show it as it is. */
  content: string;
}

export interface AtomFeed {
  id: string;
  title: string;
  updated: string;
  /** The feed's own URL (without its token) and the page it follows. */
  self: string;
  alternate: string;
  entries: AtomEntry[];
}

const el = (name: string, text: string, attrs = '') => `<${name}${attrs}>${esc(text)}</${name}>`;

export function renderAtom(f: AtomFeed): string {
  const out = [
    '<?xml version="1.0" encoding="utf-8"?>',
    '<feed xmlns="http://www.w3.org/2005/Atom">',
    `  ${el('id', f.id)}`,
    `  ${el('title', f.title)}`,
    `  ${el('updated', f.updated)}`,
    `  <link rel="self" type="application/atom+xml" href="${esc(f.self)}"/>`,
    `  <link rel="alternate" type="text/html" href="${esc(f.alternate)}"/>`,
    `  ${el('generator', 'Kiln')}`,
  ];
  for (const e of f.entries) {
    out.push(
      '  <entry>',
      `    ${el('id', e.id)}`,
      `    ${el('title', e.title, ' type="text"')}`,
      `    ${el('updated', e.updated)}`,
      `    ${el('published', e.published)}`,
      `    <link rel="alternate" type="text/html" href="${esc(e.link)}"/>`,
      `    <author>${el('name', e.author)}</author>`,
      ...e.categories.map((c) => `    <category scheme="${esc(c.scheme)}" term="${esc(c.term)}"/>`),
      `    ${el('content', e.content, ' type="text"')}`,
      '  </entry>',
    );
  }
  out.push('</feed>', '');
  return out.join('\n');
}
