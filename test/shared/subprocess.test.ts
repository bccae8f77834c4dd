import { describe, expect, it } from 'vitest';
import { run } from '../../src/shared/subprocess.js';

describe('run()', () => {
  it('stops the program at once when its abort signal was already aborted (a runner that closed while a build was being started)', async () => {
    const r = await run('sleep', ['30'], { timeoutMs: 600_000, signal: AbortSignal.abort(), processGroup: true });
    // Ran to its end, it would exit 0; stopped, it dies of SIGTERM.
    expect(r).toMatchObject({ code: null, signal: 'SIGTERM', timedOut: false });
  });

  it('stops the program when its signal aborts while it runs', async () => {
    const stop = new AbortController();
    const r = run('sleep', ['30'], { timeoutMs: 600_000, signal: stop.signal, onSpawn: () => stop.abort() });
    expect(await r).toMatchObject({ code: null, signal: 'SIGTERM', timedOut: false });
  });
});
