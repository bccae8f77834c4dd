import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { jobSpecSchema } from '../../src/protocol/index.js';
import { CHROMIUM_LAUNCH } from '../helpers/chromium.js';
import { tempDir } from '../helpers/tmp.js';
import { addUser, startTestWeb, type TestWeb } from '../helpers/web.js';
import type { InProcessGlue } from '../helpers/in-process-glue.js';
import { until } from '../helpers/wait.js';

const PW = 'correct horse battery staple';

/**
 * Real Chromium against the admin console (real glue in-process, fake SDK, the worker beside the web): an admin
 * disables a user, whose open session then ends; an admin disables a job. Two browser contexts, two cookie jars.
 * Screenshots go to a temp dir whose path is printed (kept with KILN_KEEP_SCREENSHOTS=1).
 */
describe('admin console in the browser', () => {
  let w: TestWeb & { local: InProcessGlue };
  let browser: Browser;
  let root: { username: string; password: string };
  const shots = tempDir('kiln-shots-admin-');
  const shot = (page: Page, name: string) =>
    page.screenshot({ path: path.join(shots.dir, `${name}.png`), fullPage: true });

  async function open(): Promise<{ page: Page; problems: string[] }> {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(String(e)));
    return { page, problems };
  }
  async function logIn(page: Page, username: string, password: string) {
    await page.goto(w.url + '/login');
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    await page.click('main button[type=submit]');
  }

  beforeAll(async () => {
    w = await startTestWeb({ config: { web: { registrationApproval: true } } });
    root = await addUser(w.db, 'root', 'admin');
    browser = await chromium.launch(CHROMIUM_LAUNCH);
  });
  afterAll(async () => {
    await browser?.close();
    await w?.close();
    process.stdout.write(`admin screenshots in ${shots.dir}\n`);
    if (!process.env.KILN_KEEP_SCREENSHOTS) shots.cleanup();
  });

  it("an admin approves a new user, then disables them: the user's open session ends at their next click", async () => {
    const user = await open();
    const admin = await open();
    await user.page.goto(w.url + '/register');
    await user.page.fill('input[name=username]', 'frank');
    await user.page.fill('input[name=password]', PW);
    await user.page.fill('input[name=password2]', PW);
    await user.page.click('main button[type=submit]');
    await user.page.waitForSelector('text=An admin has to approve it');
    await user.page.fill('input[name=password]', PW);
    await user.page.click('main button[type=submit]');
    await user.page.waitForSelector('text=waiting for an admin to approve it');
    await shot(user.page, '01-awaiting-approval');

    await logIn(admin.page, root.username, root.password);
    await admin.page.click('header >> text=Admin');
    await admin.page.waitForURL(/\/admin\/users$/);
    const row = admin.page.locator('tr', { hasText: 'frank' });
    expect(await row.textContent()).toContain('awaiting approval');
    await shot(admin.page, '02-users-awaiting');
    await row.locator('button[data-action=approve]').click();
    await admin.page.waitForSelector('.notice >> text=frank approved');

    await logIn(user.page, 'frank', PW);
    await user.page.waitForURL(/\/dockerfiles$/);
    await shot(user.page, '03-user-logged-in');

    await admin.page.locator('tr', { hasText: 'frank' }).locator('button[data-action=disable]').click();
    await admin.page.waitForSelector('.notice >> text=frank disabled');
    expect(await admin.page.locator('tr', { hasText: 'frank' }).textContent()).toContain('disabled');
    await shot(admin.page, '04-user-disabled');

    // The user's tab is still open on their Dockerfiles; the next click finds the session gone.
    await user.page.click('main >> text=New Dockerfile').catch(() => user.page.click('header >> text=New Dockerfile'));
    await user.page.waitForURL(/\/login/);
    expect(await user.page.locator('header').textContent()).not.toContain('frank');
    await shot(user.page, '05-session-ended');
    await logIn(user.page, 'frank', PW);
    await user.page.waitForSelector('text=Wrong username or password');

    await admin.page.click('nav.subnav >> text=Audit log');
    await admin.page.waitForURL(/\/admin\/audit$/);
    const audit = await admin.page.textContent('main table');
    expect(audit).toContain('user.disable');
    expect(audit).toContain('user.approve');
    expect(audit).toContain('127.0.0.1');
    await shot(admin.page, '06-audit-log');
    expect([...user.problems.filter((p) => !/status of 40[13]/.test(p)), ...admin.problems]).toEqual([]);
  });

  it('an admin disables a job, and deletes one Kiln did not create after confirming', async () => {
    const owner = await addUser(w.db, 'gina', 'user');
    const user = await open();
    await logIn(user.page, owner.username, owner.password);
    await user.page.waitForURL(/\/dockerfiles$/);
    await user.page.goto(w.url + '/dockerfiles/new');
    await user.page.fill('input[name=name]', 'nightly');
    await user.page.fill('textarea[name=content]', 'FROM debian:bookworm\nRUN true\n');
    await user.page.click('main button[type=submit]');
    await user.page.waitForURL(/\/dockerfiles\/\d+$/);
    const df = Number(/\/dockerfiles\/(\d+)$/.exec(user.page.url())![1]);
    await user.page.click('button:has-text("Build")');
    await user.page.waitForURL(/\/builds\/\d+$/);
    await user.page.waitForFunction(() => document.getElementById('state')?.textContent === 'succeeded', null, {
      timeout: 60_000,
    });
    await w.local.backend.putJob(
      4711,
      jobSpecSchema.parse({ owner: 'elsewhere', name: 'by-hand', dockerfile: 'FROM debian:bookworm\n' }),
    );

    const admin = await open();
    await logIn(admin.page, root.username, root.password);
    await admin.page.goto(w.url + '/admin/jobs');
    const row = admin.page.locator(`tr#job-kiln-job-${df}`);
    expect(await row.textContent()).toContain('nightly');
    expect(await admin.page.locator('tr#job-kiln-job-4711').textContent()).toContain('not created by this Kiln');
    await shot(admin.page, '07-jobs');
    await row.locator('button[data-action=disable]').click();
    await admin.page.waitForSelector(`.notice >> text=Asked the worker to disable kiln-job-${df}`);
    // the worker carries it out; the page shows the backend's state once it has it
    await until(async () => {
      await admin.page.reload();
      const text = (await admin.page.locator(`tr#job-kiln-job-${df}`).textContent()) ?? '';
      return /disabled/.test(text) && !/pending/.test(text);
    });
    expect(await admin.page.locator(`tr#job-kiln-job-${df} button[data-action=enable]`).count()).toBe(1);
    await shot(admin.page, '08-job-disabled');
    expect((await w.glue.call('jobs.list', [])).jobs.find((j) => j.job === df)?.enabled).toBe(false);

    await admin.page.locator('tr#job-kiln-job-4711 >> text=Delete').click();
    await admin.page.waitForURL(/\/admin\/jobs\/4711\/delete$/);
    await admin.page.fill('input[name=confirm]', 'kiln-job-4711');
    await shot(admin.page, '09-confirm-delete');
    await admin.page.click('main button[type=submit]');
    await admin.page.waitForURL(/\/admin\/jobs\?/);
    await until(async () => {
      await admin.page.reload();
      return (await admin.page.locator('tr#job-kiln-job-4711').count()) === 0;
    });
    await shot(admin.page, '10-job-deleted');
    await admin.page.click('nav.subnav >> text=Health');
    await admin.page.waitForSelector('#health-glue >> text=answered in');
    expect(await admin.page.textContent('#health-backend')).toMatch(/local \d+\.\d+\.\d+/);
    await shot(admin.page, '11-health');
    await admin.page.click('nav.subnav >> text=Queue');
    await admin.page.waitForSelector('h2 >> text=Builds not finished');
    await shot(admin.page, '12-queue');
    expect([...user.problems, ...admin.problems]).toEqual([]);
  });
});
