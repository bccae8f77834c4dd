import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserContext, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { tempDir } from '../helpers/tmp.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

/** A new page whose console errors and page errors (a CSP violation, a script error) are collected. */
async function watchedPage(ctx: BrowserContext): Promise<{ page: Page; problems: string[] }> {
  const page = await ctx.newPage();
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(String(e)));
  return { page, problems };
}

/** From the registration form: register, then log in on the page it leads to, landing on the Dockerfiles. */
async function signUpInBrowser(page: Page, username: string): Promise<void> {
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', 'correct horse battery staple');
  await page.fill('input[name=password2]', 'correct horse battery staple');
  await page.click('main button[type=submit]');
  await page.waitForSelector('text=Account created');
  await page.fill('input[name=password]', 'correct horse battery staple');
  await page.click('main button[type=submit]');
  await page.waitForURL(/\/dockerfiles$/);
}

/** Real Chromium against the real app (real SSH glue, fake SDK): the user's path, CSP on, no console errors. */
describe('browser', () => {
  let w: TestWeb;
  let ctx: BrowserContext;
  let profile: { dir: string; cleanup: () => void };
  const shots = tempDir('kiln-shots-');
  beforeAll(async () => {
    w = await startTestWeb({ realGlue: true });
    profile = tempDir('kiln-chromium-');
    ctx = await launchChromium(profile.dir);
  });
  afterAll(async () => {
    await ctx?.close();
    await w?.close();
    profile?.cleanup();
    if (!process.env.KILN_KEEP_SCREENSHOTS) shots.cleanup();
  });

  it('register, log in, paste a Dockerfile, see it listed, build it and watch it finish', async () => {
    const { page, problems } = await watchedPage(ctx);
    await page.goto(w.url + '/');
    await expect(page).toHaveURLish('/login');
    await page.click('text=Register');
    await signUpInBrowser(page, 'alice');
    await page.click('main >> text=New Dockerfile');
    await page.fill('input[name=name]', 'debian-minimal');
    // The policy refuses first: the findings come back next to their lines, the text kept, nothing run.
    const hostile =
      'FROM debian:bookworm\nENV D=/proc/self/fd/7\nWORKDIR $D\nLABEL x="<script>window.__pwned=1</script>"\n';
    await page.fill('textarea[name=content]', hostile);
    await page.click('main button[type=submit]');
    await page.waitForSelector('tr#df-line-3.flagged .finding');
    expect(await page.textContent('tr#df-line-3 .finding')).toContain('WORKDIR /proc/self/fd/7 is not allowed');
    expect(await page.textContent('.findings-list')).toContain('line 3: WORKDIR /proc/self/fd/7');
    expect(await page.inputValue('textarea[name=content]')).toBe(hostile);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.screenshot({ path: path.join(shots.dir, 'refused.png'), fullPage: true });
    // Chromium reports the 422 itself; nothing else (no CSP violation, no script error).
    expect(problems).toEqual([
      'Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)',
    ]);
    problems.length = 0;
    const xss =
      'FROM debian:bookworm\nLABEL note="<script>window.__pwned=1</script>"\nRUN apt-get update && apt-get install -y --no-install-recommends linux-image-amd64 systemd-sysv\n';
    await page.fill('textarea[name=content]', xss);
    await page.click('main button[type=submit]');
    await page.waitForURL(/\/dockerfiles\/\d+$/);
    expect(await page.textContent('pre.code')).toBe(xss);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.screenshot({ path: path.join(shots.dir, 'dockerfile.png'), fullPage: true });
    await page.click('text=My Dockerfiles');
    await page.waitForSelector('table >> text=debian-minimal');
    await page.screenshot({ path: path.join(shots.dir, 'list.png'), fullPage: true });
    await page.click('table >> text=debian-minimal');
    await page.click('button:has-text("Build")');
    await page.waitForURL(/\/builds\/\d+$/);
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'succeeded', null, {
      timeout: 30_000,
    });
    // The page reloads itself once the build has ended (the report is the server's): wait for it.
    await page.waitForSelector('table.boot-tests', { timeout: 30_000 });
    await page.waitForSelector('#artifacts a:has-text("image.raw")');
    await page.waitForFunction(
      () => (document.getElementById('log')?.textContent ?? '').includes('[kiln] build succeeded'),
      null,
      { timeout: 10_000 },
    );
    // The SDK's machine lines are progress events, never shown as log text.
    expect(await page.textContent('#log')).not.toContain('##kiln');
    await page.screenshot({ path: path.join(shots.dir, 'build.png'), fullPage: true });
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click('#artifacts a:has-text("image.raw")'),
    ]);
    expect(download.suggestedFilename()).toMatch(/^kiln-\d+-image\.raw$/);
    // A long log (700 KiB) is paged in quickly; the page keeps its tail.
    await page.goto(w.url + '/dockerfiles/new');
    await page.fill('input[name=name]', 'noisy');
    await page.fill('textarea[name=content]', 'FROM debian:bookworm\n# fake: noise 700\nRUN true\n');
    await page.click('main button[type=submit]');
    await page.waitForURL(/\/dockerfiles\/\d+$/);
    await page.click('button:has-text("Build")');
    await page.waitForURL(/\/builds\/\d+$/);
    await page.waitForSelector('table.boot-tests', { timeout: 30_000 });
    await page.waitForFunction(
      () => (document.getElementById('log')?.textContent ?? '').includes('[kiln] build succeeded'),
      null,
      { timeout: 20_000 },
    );
    const shown = (await page.textContent('#log'))!;
    expect(shown.split('\n').filter((l) => /^x{1023}$/.test(l))).toHaveLength(700);
    await page.click('button:has-text("Log out")');
    await page.waitForURL(/\/login$/);
    expect(problems).toEqual([]);
    process.stdout.write(`screenshots in ${shots.dir}\n`);
  });
});

/** The journey of issue 10: register, paste, build, watch the live log, download; screenshots kept. */
describe('browser: following a build', () => {
  let w: TestWeb & { realGlue: { dataDir: string } };
  let ctx: BrowserContext;
  let profile: { dir: string; cleanup: () => void };
  const shots = tempDir('kiln-shots-follow-');
  beforeAll(async () => {
    w = await startTestWeb({ realGlue: true, config: { web: { livePollMs: 100 } } });
    profile = tempDir('kiln-chromium-');
    ctx = await launchChromium(profile.dir, { viewport: { width: 1200, height: 900 } });
  });
  afterAll(async () => {
    await ctx?.close();
    await w?.close();
    profile?.cleanup();
    // Kept for people to look at: the path is printed.
    process.stdout.write(`screenshots of the follow journey in ${shots.dir}\n`);
  });

  it('register, paste, build, watch the live log, download', async () => {
    const { page, problems } = await watchedPage(ctx);
    await page.goto(w.url + '/register');
    await signUpInBrowser(page, 'carol');
    await page.click('main >> text=New Dockerfile');
    await page.fill('input[name=name]', 'web-appliance');
    await page.fill(
      'textarea[name=content]',
      'FROM debian:bookworm\n# fake: gate journey\n# fake-lines: 30\n# fake-ansi\n# fake-packages: libc6=2.36-9 curl=7.88.1 nginx=1.22.1\nRUN apt-get update && apt-get install -y nginx\n',
    );
    await page.click('main button[type=submit]');
    await page.waitForURL(/\/dockerfiles\/\d+$/);
    await page.click('button:has-text("Build")');
    await page.waitForURL(/\/builds\/\d+$/);
    // Live: lines arrive while the build runs, colours as classes, markup as text, progress from the SDK's events.
    await page.waitForFunction(
      () => (document.getElementById('log')?.textContent ?? '').includes('waiting at gate'),
      null,
      { timeout: 30_000 },
    );
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'running', null, {
      timeout: 30_000,
    });
    expect(await page.textContent('#stage')).toBe('build: building the Dockerfile');
    expect(await page.textContent('#log span.ansi-fg-1')).toBe('<script>alert(1)</script>');
    expect(await page.textContent('#log')).not.toContain('##kiln');
    await page.screenshot({ path: path.join(shots.dir, '1-live-log.png'), fullPage: true });
    mkdirSync(path.join(w.realGlue.dataDir, 'gates'), { recursive: true });
    writeFileSync(path.join(w.realGlue.dataDir, 'gates', 'journey'), '');
    // The page reloads itself once the build has ended: the report is the server's.
    await page.waitForSelector('table.boot-tests', { timeout: 30_000 });
    expect(await page.textContent('#state')).toBe('succeeded');
    expect(await page.getAttribute('#progress', 'value')).toBe('100');
    expect(await page.textContent('#stage')).toBe('image ready');
    await page.waitForFunction(() => (document.getElementById('log')?.textContent ?? '').includes('after 30'), null, {
      timeout: 10_000,
    });
    const log = (await page.textContent('#log'))!;
    expect(log.match(/\[kiln\] build succeeded/g)).toHaveLength(1);
    expect(log.match(/^line 17$/gm)).toHaveLength(1);
    expect(await page.getAttribute('#artifacts li:has(a:has-text("image.raw")) .size', 'title')).toBe('15 bytes');
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.screenshot({ path: path.join(shots.dir, '2-finished.png'), fullPage: true });
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.click('#artifacts a:has-text("image.raw")'),
    ]);
    expect(download.suggestedFilename()).toMatch(/^kiln-\d+-image\.raw$/);
    await page.click('a:has-text("serial log")');
    await page.waitForSelector('pre.serial');
    expect(await page.textContent('pre.serial')).toContain('kiln login:');
    await page.screenshot({ path: path.join(shots.dir, '3-serial.png'), fullPage: true });
    await page.goBack();
    await page.click('p.links a[href$="/manifest"]');
    await page.fill('input[name=q]', 'curl');
    await page.click('button:has-text("Search")');
    await page.waitForSelector('text=1 of 3 packages');
    await page.screenshot({ path: path.join(shots.dir, '4-manifest.png'), fullPage: true });
    await page.click('header >> text=Builds');
    await page.waitForSelector('table.builds');
    await page.screenshot({ path: path.join(shots.dir, '5-builds.png'), fullPage: true });
    expect(problems).toEqual([]);
  });
});

// tiny helper so the first navigation check reads well
declare module 'vitest' {
  interface Assertion {
    toHaveURLish(suffix: string): void;
  }
}
expect.extend({
  toHaveURLish(received: { url(): string }, suffix: string) {
    const url = received.url();
    return { pass: new URL(url).pathname === suffix, message: () => `expected ${url} to have path ${suffix}` };
  },
});
