import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BrowserContext } from 'playwright-core';
import { launchChromium } from '../helpers/chromium.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { startTestWeb, type TestWeb } from '../helpers/web.js';

/**
 * Real Chromium against the real app (real SSH glue, local backend): the journey "set a daily schedule and switch
 * it off". Screenshots stay in the printed directory (a temp dir; KILN_KEEP_SCREENSHOTS=1 keeps it after the run).
 */
describe('browser: jobs', () => {
  let w: TestWeb & { realGlue: { dataDir?: string } };
  let ctx: BrowserContext;
  let profile: { dir: string; cleanup: () => void };
  const shots = tempDir('kiln-shots-jobs-');
  beforeAll(async () => {
    w = (await startTestWeb({ realGlue: true })) as typeof w;
    profile = tempDir('kiln-chromium-');
    ctx = await launchChromium(profile.dir);
    console.log(`screenshots: ${shots.dir}`);
  });
  afterAll(async () => {
    await ctx?.close();
    await w?.close();
    profile?.cleanup();
    if (!process.env.KILN_KEEP_SCREENSHOTS) shots.cleanup();
  });

  it('set a daily schedule and switch it off', async () => {
    const alice = w.client();
    await alice.signUp('alice');
    const id = await alice.createDockerfile('nightly', 'FROM debian:bookworm\nRUN true\n');
    const page = await ctx.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(w.url + '/login');
    await page.fill('input[name=username]', 'alice');
    await page.fill('input[name=password]', 'correct horse battery staple');
    await page.click('main button[type=submit]');
    await page.waitForURL(/\/dockerfiles$/);
    await page.click('table >> text=nightly');
    await page.waitForURL(new RegExp(`/dockerfiles/${id}$`));
    await page.screenshot({ path: path.join(shots.dir, '1-before.png'), fullPage: true });
    await page.check('input[name=schedule][value=daily]');
    await page.selectOption('select[name=hour]', '6');
    await page.check('input[name=formats][value=qcow2]');
    await page.click('#job-save');
    await page.waitForURL(new RegExp(`/dockerfiles/${id}#job$`));
    // The worker applies it through the glue; the page shows the job as the build service has it.
    await until(async () => {
      await page.reload();
      return (await page.textContent('#job-backend'))?.includes('daily at 06:00 UTC');
    });
    expect(await page.isChecked('input[name=schedule][value=daily]')).toBe(true);
    expect(await page.locator('#job-drift').count()).toBe(0);
    await page.screenshot({ path: path.join(shots.dir, '2-daily.png'), fullPage: true });
    await page.click('#job-toggle');
    await page.waitForURL(new RegExp(`/dockerfiles/${id}#job$`));
    expect(await page.textContent('#job-switch')).toContain('The job is off');
    expect(await page.isDisabled('button:has-text("Build")')).toBe(true);
    await until(async () => {
      await page.reload();
      return (await page.textContent('#job-backend'))?.match(/Switch\s*off/);
    });
    expect(await page.textContent('#job-backend')).toContain('daily at 06:00 UTC');
    await page.screenshot({ path: path.join(shots.dir, '3-switched-off.png'), fullPage: true });
    expect(problems).toEqual([]);
  }, 120_000);
});
