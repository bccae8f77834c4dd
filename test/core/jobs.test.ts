/**
 * Jobs from the web through the core's use cases, on SQLite and PostgreSQL, with the real glue and local backend
 * in-process (fake SDK) and a worker the test drains: settings reach the job through the job.sync task, the switch
 * reaches job.enable/job.disable, Build leaves the settings alone, the job as the backend has it is read back with
 * what drifted, a timer build is found with trigger `schedule`, and deletion waits for the glue and then frees the
 * owner's storage.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import {
  CLI,
  DEFAULT_LOGIN_LIMITS,
  PasswordHasher,
  createCore,
  createUsers,
  createWorker,
  userActor,
  type Core,
} from '../../src/core/index.js';
import { enqueue } from '../../src/core/tasks/queue.js';
import {
  findBuild,
  findDockerfile,
  findUserByName,
  getJobSettings,
  listTasks,
  storageUsedBy,
} from '../../src/db/index.js';
import { silentLogger } from '../../src/shared/logger.js';
import { freshDb, type TestDb } from '../db/engines.js';
import { startInProcessGlue, type InProcessGlue } from '../helpers/in-process-glue.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { TEST_WORKER } from '../helpers/web.js';

for (const engine of ['sqlite', 'pg'] as const) {
  describe(`jobs on ${engine}`, () => {
    const tmp = tempDir('kiln-jobs-');
    let t: TestDb;
    let glue: InProcessGlue;
    let core: Core;
    let backendNow = new Date('2030-06-03T00:30:00Z');
    let alice: ReturnType<typeof userActor>;
    let bob: ReturnType<typeof userActor>;
    const config = loadConfig({}, { dataDir: tmp.dir, sdk: { formats: ['raw'] }, worker: TEST_WORKER });
    const worker = () => createWorker({ config, db: t.db, glue: glue.client, logger: silentLogger });
    const drain = () => worker().drain();
    const jobConfig = (id: number) =>
      JSON.parse(
        readFileSync(path.join(glue.dataDir, 'glue', 'jobs', `kiln-job-${id}`, 'config.json'), 'utf8'),
      ) as Record<string, unknown>;
    let seq = 0;
    const newDockerfile = async (actor = alice) =>
      (await core.dockerfiles.create(actor, { name: `df${++seq}`, content: 'FROM debian:bookworm\nRUN true\n' })).id;

    beforeAll(async () => {
      t = await freshDb(engine);
      glue = await startInProcessGlue({ dataDir: path.join(tmp.dir, 'glue-data'), now: () => backendNow });
      core = createCore({
        config,
        db: t.db,
        glue: glue.client,
        logger: silentLogger,
        hasher: new PasswordHasher(1),
        limits: DEFAULT_LOGIN_LIMITS,
      });
      const users = createUsers({ db: t.db, hasher: new PasswordHasher(1), logger: silentLogger });
      for (const name of ['alice', 'bob']) await users.create(CLI, { username: name, role: 'user' });
      alice = userActor((await findUserByName(t.db, 'alice'))!);
      bob = userActor((await findUserByName(t.db, 'bob'))!);
    }, 120_000);
    afterAll(async () => {
      await glue?.close();
      await t?.drop();
      tmp.cleanup();
    });

    it('a daily schedule at an hour, formats, firmware and build arguments reach the job through job.sync; the switch reaches job.disable and job.enable', async () => {
      const id = await newDockerfile();
      await core.jobs.save(alice, `${id}`, {
        schedule: 'daily',
        hour: '5',
        formats: ['raw', 'qcow2'],
        bootFirmware: ['uefi'],
        buildArgs: 'A=1\nB=two words\n',
      });
      expect((await core.jobs.status(alice, `${id}`)).pending).toBe(true);
      const from = glue.commands.length;
      await drain();
      expect(glue.verbsSince(from)).toEqual(['job.put', 'job.enable']);
      expect(jobConfig(id)).toMatchObject({
        schedule: 'daily',
        scheduleHour: 5,
        formats: ['raw', 'qcow2'],
        bootFirmware: ['uefi'],
        buildArgs: { A: '1', B: 'two words' },
        enabled: true,
      });
      const st = await core.jobs.status(alice, `${id}`);
      expect(st).toMatchObject({
        pending: false,
        backendState: 'ok',
        drift: [],
        backend: { enabled: true, schedule: 'daily', scheduleHour: 5 },
      });

      await core.jobs.setEnabled(alice, `${id}`, { enabled: false });
      const mark = glue.commands.length;
      await drain();
      expect(glue.commands.slice(mark)).toContain(`job.disable ${id}`);
      expect(jobConfig(id)).toMatchObject({ enabled: false, schedule: 'daily' });
      // Switched off: Build is refused rather than silently switching it back on.
      await expect(
        core.builds.request(alice, { dockerfileId: `${id}`, key: `off-${engine}-key-1` }),
      ).rejects.toMatchObject({ code: 'conflict' });
      await core.jobs.setEnabled(alice, `${id}`, { enabled: true });
      await drain();
      expect(jobConfig(id)).toMatchObject({ enabled: true });
    }, 120_000);

    it('pressing Build never changes the job\'s settings (it used to reset them to "no schedule, enabled")', async () => {
      const id = await newDockerfile();
      await core.jobs.save(alice, `${id}`, { schedule: 'weekly', hour: 7, weekday: 3, formats: ['qcow2'] });
      await drain();
      const before = await getJobSettings(t.db, id);
      const { build } = await core.builds.request(alice, { dockerfileId: `${id}`, key: `keep-${engine}-settings` });
      await until(async () => {
        await drain();
        return (await findBuild(t.db, build.id, null))?.state === 'succeeded';
      });
      expect(jobConfig(id)).toMatchObject({
        schedule: 'weekly',
        scheduleHour: 7,
        scheduleWeekday: 3,
        formats: ['qcow2'],
        enabled: true,
      });
      expect(await getJobSettings(t.db, id)).toEqual(before);
      expect((await core.jobs.status(alice, `${id}`)).drift).toEqual([]);
      expect((await findBuild(t.db, build.id, null))!.trigger).toBe('manual');
    }, 120_000);

    it("shows the job as the backend has it and says what drifted when it was changed behind Kiln's back", async () => {
      const id = await newDockerfile();
      await core.jobs.save(alice, `${id}`, { schedule: 'daily', hour: 1 });
      await drain();
      const file = path.join(glue.dataDir, 'glue', 'jobs', `kiln-job-${id}`, 'config.json');
      writeFileSync(
        file,
        JSON.stringify({
          ...jobConfig(id),
          enabled: false,
          schedule: 'weekly',
          scheduleHour: 9,
          scheduleWeekday: 0,
          formats: ['iso'],
        }),
      );
      const st = await core.jobs.status(alice, `${id}`);
      expect(st.backend).toMatchObject({ enabled: false, schedule: 'weekly', scheduleHour: 9 });
      expect(st.drift).toEqual([
        'Switched on in Kiln, off in the build service.',
        'Schedule: daily at 01:00 UTC in Kiln, weekly on Sunday at 09:00 UTC in the build service.',
        'Output formats: raw in Kiln, iso in the build service.',
      ]);
      // Saving again puts Kiln's back.
      await core.jobs.save(alice, `${id}`, {});
      await drain();
      expect((await core.jobs.status(alice, `${id}`)).drift).toEqual([]);
      // Not yours: like a missing id.
      await expect(core.jobs.status(bob, `${id}`)).rejects.toMatchObject({ code: 'not_found' });
      await expect(core.jobs.save(bob, `${id}`, { schedule: 'off' })).rejects.toMatchObject({ code: 'not_found' });
      await expect(core.jobs.setEnabled(bob, `${id}`, { enabled: false })).rejects.toMatchObject({ code: 'not_found' });
    }, 120_000);

    it('refuses bad settings with a clear message and stores nothing', async () => {
      const id = await newDockerfile();
      for (const [input, msg] of [
        [{ schedule: 'hourly' }, /off, daily or weekly/],
        [{ hour: '24' }, /hour must be a whole number from 0 to 23/],
        [{ weekday: 7 }, /weekday must be/],
        [{ formats: [] }, /at least one output format/],
        [{ formats: ['exe'] }, /Unknown output format/],
        [{ bootFirmware: ['coreboot'] }, /Unknown firmware/],
        [{ buildArgs: 'no equals sign' }, /NAME=VALUE/],
        [{ buildArgs: { '1BAD': 'x' } }, /not a build argument name/],
        [{ buildArgs: { A: 'line\nbreak' } }, /control characters/],
      ] as const) {
        await expect(core.jobs.save(alice, `${id}`, input)).rejects.toMatchObject({
          code: 'invalid_input',
          message: expect.stringMatching(msg),
        });
      }
      expect(await getJobSettings(t.db, id)).toBeUndefined();
    });

    it("a build the backend's timer started appears with trigger schedule (reconciliation finds it) and is verified like any other", async () => {
      const id = await newDockerfile();
      await core.jobs.save(alice, `${id}`, { schedule: 'daily', hour: 3 });
      await drain();
      backendNow = new Date(backendNow.getTime() + 27 * 3600_000); // the next day, 03:30 UTC
      await glue.backend.checkSchedules();
      await enqueue(t.db, { config }, 'reconcile', '');
      const row = await until(async () => {
        await drain();
        return (await t.db('builds').where({ dockerfile_id: id, trigger: 'schedule' }).first()) as
          { id: number } | undefined;
      });
      const b = await until(async () => {
        await drain();
        const x = await findBuild(t.db, row.id, null);
        return x?.state === 'succeeded' && x;
      });
      expect(b).toMatchObject({ trigger: 'schedule', backend_build: 1, owner_id: alice.id });
      expect(b.artifacts.find((a) => a.name === 'image.raw')?.sha256).toMatch(/^[0-9a-f]{64}$/);
      // Another pass finds nothing new.
      await enqueue(t.db, { config }, 'reconcile', '');
      await drain();
      expect(await t.db('builds').where({ dockerfile_id: id }).count({ n: '*' })).toEqual([
        { n: engine === 'pg' ? '1' : 1 },
      ]);
    }, 120_000);

    it('deleting needs the name typed; with the glue down it stays pending (nothing half-deleted), then the job and every row go and storage use drops', async () => {
      const id = await newDockerfile();
      const { build } = await core.builds.request(alice, { dockerfileId: `${id}`, key: `del-${engine}-build-1` });
      await until(async () => {
        await drain();
        return (await findBuild(t.db, build.id, null))?.state === 'succeeded';
      });
      const before = await storageUsedBy(t.db, alice.id);
      const mine =
        (await core.dockerfiles.get(alice, `${id}`)).version!.size +
        (await findBuild(t.db, build.id, null))!.artifacts.reduce((n, a) => n + a.size, 0);
      await expect(core.dockerfiles.remove(alice, { id: `${id}`, confirm: 'wrong' })).rejects.toMatchObject({
        code: 'invalid_input',
      });
      await expect(core.dockerfiles.remove(bob, { id: `${id}`, confirm: `df${seq}` })).rejects.toMatchObject({
        code: 'not_found',
      });
      expect((await findDockerfile(t.db, id, null))!.deleting_at).toBeNull();
      glue.down = true;
      try {
        await core.dockerfiles.remove(alice, { id: `${id}`, confirm: `df${seq}` });
        await drain();
        expect((await findDockerfile(t.db, id, null))!.deleting_at).not.toBeNull();
        expect(await findBuild(t.db, build.id, null)).toBeDefined();
        expect(
          (await listTasks(t.db)).find((x) => x.kind === 'dockerfile.delete' && x.subject === `dockerfile:${id}`),
        ).toMatchObject({ state: 'pending' });
        await expect(
          core.builds.request(alice, { dockerfileId: `${id}`, key: `del-${engine}-build-2` }),
        ).rejects.toMatchObject({ code: 'conflict' });
        await expect(core.jobs.save(alice, `${id}`, { schedule: 'daily' })).rejects.toMatchObject({ code: 'conflict' });
      } finally {
        glue.down = false;
      }
      await until(async () => {
        await drain();
        return !(await findDockerfile(t.db, id, null));
      });
      expect(await findBuild(t.db, build.id, null)).toBeUndefined();
      expect((await glue.client.call('jobs.list', [])).jobs.map((j) => j.job)).not.toContain(id);
      expect((await storageUsedBy(t.db, alice.id)).total).toBe(before.total - mine);
    }, 120_000);
  });
}
