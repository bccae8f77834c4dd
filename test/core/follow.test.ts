import { describe, expect, it } from 'vitest';
import { completeLines, escapeHtml, lineHtml, plainLine, splitMachineLines } from '../../src/core/builds/log-view.js';
import { fairOrder } from '../../src/core/builds/waiting.js';
import { diffPackages } from '../../src/core/builds/report.js';
import { BuildWatch, Coalescer } from '../../src/core/builds/live.js';
import { progressOf } from '../../src/core/index.js';
import { exactBytes, humanBytes } from '../../src/web/format.js';
import { htmlText } from '../helpers/sse.js';
import { until } from '../helpers/wait.js';
import type { BuildRow } from '../../src/db/index.js';

/** The only markup lineHtml may produce: our spans with our class names; everything else is escaped text. */
const SAFE =
  /^(?:[^<>&]|&(?:amp|lt|gt|quot|#39);|<span class="(?:ansi-(?:fg|bg)-(?:[0-9]|1[0-5])|ansi-(?:bold|dim|italic|underline))(?: (?:ansi-(?:fg|bg)-(?:[0-9]|1[0-5])|ansi-(?:bold|dim|italic|underline)))*">|<\/span>)*$/;

describe('the human log', () => {
  it('ANSI: hostile input is escaped first, then SGR codes become fixed class names; other escapes and controls are dropped', () => {
    const hostile = [
      '\x1b[31m<script>alert(1)</script>\x1b[0m',
      '\x1b]8;;javascript:alert(2)\x07link\x1b]8;;\x07',
      '\x1b[1;32m"quoted" & \'single\'\x1b[22m <img src=x onerror=alert(3)>',
      '\x1b[38;5;9mbright\x1b[38;2;255;0;0mtrue\x1b[39m',
      '\x1b[31m<span class="x" style="color:red">\x1b[0m',
      '\x1b]0;<title>\x1b\\ \x1b[2J\x1b[H\x1bc\x07\x08\x00\u009b31m C1',
      '\x1b[999;-1;31;;mweird\x1b[',
      '\x1b]8;;http://x\x1b[31m never closed <b>',
      'class="ansi-fg-1"><script>',
    ];
    for (const line of hostile) {
      const html = lineHtml(line);
      expect(html, JSON.stringify(line)).toMatch(SAFE);
      expect(html).not.toMatch(/<(?!\/?span\b)/);
      // eslint-disable-next-line no-control-regex
      expect(htmlText(html)).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
    }
    expect(lineHtml(hostile[0]!)).toBe('<span class="ansi-fg-1">&lt;script&gt;alert(1)&lt;/script&gt;</span>');
    expect(lineHtml(hostile[1]!)).toBe('link');
    expect(lineHtml(hostile[2]!)).toBe(
      '<span class="ansi-fg-2 ansi-bold">&quot;quoted&quot; &amp; &#39;single&#39;</span><span class="ansi-fg-2"> &lt;img src=x onerror=alert(3)&gt;</span>',
    );
    expect(lineHtml(hostile[3]!)).toBe('<span class="ansi-fg-9">brighttrue</span>');
    expect(escapeHtml('<&>"\'')).toBe('&lt;&amp;&gt;&quot;&#39;');
    expect(plainLine('\x1b[31mred\x1b[0m \x1b]8;;x\x07l\x1b]8;;\x07')).toBe('red l');
  });

  it('a colour left open carries to the next line of the same stream', () => {
    const st = { sgr: {} };
    expect(lineHtml('\x1b[33mwarn', st)).toBe('<span class="ansi-fg-3">warn</span>');
    expect(lineHtml('still', st)).toBe('<span class="ansi-fg-3">still</span>');
    expect(lineHtml('\x1b[0mplain', st)).toBe('plain');
  });

  it('machine lines become progress events and leave the human lines; a build line that merely mentions the prefix stays', () => {
    const { human, progress } = splitMachineLines([
      'a',
      '##kiln {"stage":"boot","percent":80,"message":"booting"}',
      '##kiln {broken',
      ' ##kiln {"stage":"x","percent":1}',
      'b',
    ]);
    expect(human).toEqual(['a', ' ##kiln {"stage":"x","percent":1}', 'b']);
    expect(progress).toEqual([{ stage: 'boot', percent: 80, message: 'booting' }]);
  });

  it('only complete lines are handed out, at byte offsets (multi-byte text included); the rest waits unless the log ended', () => {
    expect(completeLines({ text: 'é1\nzw', offset: 10, nextOffset: 16, more: true })).toEqual({
      lines: ['é1'],
      start: 10,
      next: 14,
    });
    expect(completeLines({ text: 'partial', offset: 4, nextOffset: 11, more: true })).toEqual({
      lines: [],
      start: 4,
      next: 4,
    });
    expect(completeLines({ text: 'x\nend', offset: 0, nextOffset: 5, more: false })).toEqual({
      lines: ['x', 'end'],
      start: 0,
      next: 5,
    });
    const long = 'y'.repeat(70 * 1024);
    expect(completeLines({ text: long, offset: 0, nextOffset: long.length, more: true }).next).toBe(long.length);
  });
});

describe('the fair queue order', () => {
  it('A queues 10, then B queues 1: B comes second', () => {
    const waiting = [...Array.from({ length: 10 }, (_, i) => ({ id: i + 1, owner_id: 1 })), { id: 11, owner_id: 2 }];
    expect(fairOrder(waiting).slice(0, 3)).toEqual([1, 11, 2]);
    // A user with a build running goes after the others in each round.
    expect(fairOrder(waiting, new Map([[1, 1]]))[0]).toBe(11);
    expect(
      fairOrder([
        { id: 5, owner_id: 3 },
        { id: 6, owner_id: 3 },
        { id: 7, owner_id: 4 },
        { id: 8, owner_id: 5 },
      ]),
    ).toEqual([5, 7, 8, 6]);
  });
});

describe('build views', () => {
  it('a finished build shows how it ended, never a stale stage', () => {
    const stale = { stage: 'boot', percent: 33, message: 'booting image.raw (uefi)' };
    expect(progressOf({ state: 'succeeded', progress: stale, reason: null })).toEqual({
      percent: 100,
      label: 'image ready',
    });
    expect(progressOf({ state: 'verifying', progress: stale, reason: null }).percent).toBe(100);
    expect(progressOf({ state: 'failed', progress: stale, reason: 'x' })).toEqual({
      percent: 33,
      label: 'failed during boot',
    });
    expect(progressOf({ state: 'running', progress: stale, reason: null })).toEqual({
      percent: 33,
      label: 'boot: booting image.raw (uefi)',
    });
  });

  it('sizes read as people read them, with the exact count for a title', () => {
    expect(humanBytes(1238368256)).toBe('1.15 GiB');
    expect(exactBytes(1238368256)).toBe('1,238,368,256 bytes');
    expect(humanBytes(15)).toBe('15 bytes');
    expect(humanBytes(2048)).toBe('2.00 KiB');
  });

  it('package diff: added, removed, changed versions', () => {
    const d = diffPackages(
      [
        { name: 'a', version: '1', architecture: 'amd64' },
        { name: 'b', version: '2', architecture: 'amd64' },
        { name: 'c', version: '1', architecture: 'amd64' },
      ],
      [
        { name: 'a', version: '2', architecture: 'amd64' },
        { name: 'b', version: '2', architecture: 'amd64' },
        { name: 'd', version: '1', architecture: 'amd64' },
      ],
    );
    expect(d).toEqual({
      added: [{ name: 'd', version: '1', architecture: 'amd64' }],
      removed: [{ name: 'c', version: '1', architecture: 'amd64' }],
      changed: [{ name: 'a', architecture: 'amd64', from: '1', to: '2' }],
      unchanged: 1,
    });
  });

  it('the coalescer makes one call for concurrent readers of a key and forgets errors', async () => {
    const c = new Coalescer();
    let calls = 0;
    const f = () =>
      new Promise<number>((r) => {
        calls++;
        setTimeout(() => r(calls), 5);
      });
    const got = await Promise.all(Array.from({ length: 50 }, () => c.get('k', () => 60_000, f)));
    expect(new Set(got)).toEqual(new Set([1]));
    expect(calls).toBe(1);
    await expect(
      c.get(
        'e',
        () => 60_000,
        () => Promise.reject(new Error('x')),
      ),
    ).rejects.toThrow('x');
    expect(
      await c.get(
        'e',
        () => 60_000,
        async () => 7,
      ),
    ).toBe(7);
  });
});

describe('the long poll (BuildWatch)', () => {
  it('a hundred waiters on a hundred builds cost one read per poll; each is answered when its build moves, at its deadline, or on abort', async () => {
    const state = new Map<number, string>(Array.from({ length: 100 }, (_, i) => [i + 1, 'running']));
    const reads: number[][] = [];
    const watch = new BuildWatch(async (ids) => {
      reads.push(ids);
      return new Map(
        ids.filter((id) => state.has(id)).map((id) => [id, { id, state: state.get(id) } as unknown as BuildRow]),
      );
    }, 20);
    const far = Date.now() + 60_000;
    const moved = (b: BuildRow) => b.state !== 'running';
    const ac = new AbortController();
    const waits = [...state.keys()].map((id) =>
      watch.until(id, moved, id === 100 ? Date.now() + 50 : far, id === 99 ? ac.signal : new AbortController().signal),
    );
    await until(() => (reads.length >= 1 ? true : undefined));
    expect(reads[0]!.length).toBe(100);
    for (let id = 1; id <= 50; id++) state.set(id, 'succeeded');
    state.delete(98);
    const first50 = await Promise.all(waits.slice(0, 50));
    expect(first50.every((b) => b?.state === 'succeeded')).toBe(true);
    expect(await waits[97]).toBeNull(); // gone
    expect((await waits[99])?.state).toBe('running'); // its deadline
    ac.abort();
    expect((await waits[98])?.state).toBe('running'); // aborted: the last row read
    // Every read asked for all the builds still waited on at once: never one query per waiter.
    expect(reads.every((r) => r.length === new Set(r).size)).toBe(true);
    const readsSoFar = reads.length;
    for (let id = 51; id <= 97; id++) state.set(id, 'failed');
    await Promise.all(waits.slice(50, 97));
    expect(reads.length - readsSoFar).toBeLessThanOrEqual(2);
  });
});
