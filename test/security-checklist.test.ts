/**
 * The security checklist (../shared/SECURITY-CHECKLIST.md, section 7) is Kiln's acceptance list: each of its cases
 * must be named by the title of a test that exercises it (`case N: ...`). This test reads every test file's titles
 * and fails naming the cases no title claims, so a case cannot silently lose its test in a refactor.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const repo = path.resolve(import.meta.dirname, '..');
const CHECKLIST = path.resolve(repo, '../shared/SECURITY-CHECKLIST.md');
/** The checklist's section 7 has had 54 cases since it was written; the file, when present, must agree. */
const CASES = 54;

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return testFiles(p);
    return e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/**
 * Titles of it()/test()/describe() calls, including the `.each([...])(title)` form whose table may span lines;
 * skipped and todo ones are left out: they test nothing.
 */
export function titles(source: string): string[] {
  const out: string[] = [];
  const direct = /\b(?:it|test|describe)((?:\.(?:only|concurrent|sequential))*)\(\s*(['"`])((?:\\.|(?!\2).)*)\2/g;
  for (const m of source.matchAll(direct)) out.push(m[3]!);
  // `.each(` ... `)(title`: the table is skipped by finding the call that follows it.
  const each = /\b(?:it|test|describe)(?:\.(?:only|concurrent|sequential))*\.each\b/g;
  for (const m of source.matchAll(each)) {
    const rest = source.slice(m.index! + m[0].length);
    const t = /^[\s\S]*?\)\s*\(\s*(['"`])((?:\\.|(?!\1).)*)\1/.exec(rest);
    if (t) out.push(t[2]!);
  }
  return out;
}

/** Case numbers a title claims: `case 7:`, `cases 26, 27 and 28:`. */
export function claimedCases(title: string): number[] {
  const out: number[] = [];
  for (const m of title.matchAll(/\bcases?\s+((?:\d+)(?:\s*(?:,|and|&)\s*\d+)*)/gi)) {
    for (const n of m[1]!.match(/\d+/g) ?? []) out.push(Number(n));
  }
  return out;
}

describe('the security checklist', () => {
  it('reads titles and case numbers the way the suite writes them', () => {
    expect(
      titles("it('case 3: x', () => {}); it.skip('case 4: y'); describe(`cases 5, 6 and 7: z`, () => {})"),
    ).toEqual(['case 3: x', 'cases 5, 6 and 7: z']);
    expect(titles("it.each([\n  'a (b)',\n  'c',\n])('case 26: refuses %j', async () => {})")).toEqual([
      'case 26: refuses %j',
    ]);
    expect(claimedCases('cases 5, 6 and 7: z')).toEqual([5, 6, 7]);
    expect(claimedCases('a showcase 12 of nothing')).toEqual([]);
  });

  it('has every one of its cases named by a test title', () => {
    if (existsSync(CHECKLIST)) {
      const section = readFileSync(CHECKLIST, 'utf8').split('## 7. Test checklist')[1]?.split('\n## ')[0] ?? '';
      expect(section.match(/^\d+\. /gm)?.length).toBe(CASES);
    }
    const named = new Map<number, string[]>();
    for (const f of testFiles(path.join(repo, 'test'))) {
      for (const t of titles(readFileSync(f, 'utf8'))) {
        for (const n of claimedCases(t)) named.set(n, [...(named.get(n) ?? []), path.relative(repo, f)]);
      }
    }
    const missing = Array.from({ length: CASES }, (_, i) => i + 1).filter((n) => !named.has(n));
    expect(missing, `checklist cases no test title names: ${missing.join(', ')}`).toEqual([]);
  });
});
