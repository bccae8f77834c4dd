/**
 * The site admin's base names end to end, as people meet them: the real `kiln serve` (web, built-in SSH glue,
 * local backend, the real SDK with dockerd and QEMU). An admin maps the name a CI Dockerfile uses; a user's
 * Dockerfile written with it builds and boots, and its manifest and provenance name the base; a user cannot map
 * names; a mapping to a base outside sdk.bases is refused by the web and, when one reaches a build anyway, by the
 * SDK. One real image build (its RUN step is the layer cache's when debian-minimal was built before).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb } from '../../src/db/index.js';
import { startKilnServe, waitForBuild, type KilnServe } from '../helpers/serve.js';
import { HttpClient } from '../helpers/web.js';
import { tempDir } from '../helpers/tmp.js';

const repo = path.resolve(import.meta.dirname, '../..');
const NAME = 'registry.example.com/ci/debian:12';
const dockerfile = readFileSync(path.join(repo, 'dockerfiles/debian-minimal/Dockerfile'), 'utf8').replace(
  /^FROM debian:bookworm$/m,
  `FROM ${NAME}.7`,
);

describe('site base names: an admin maps a CI name, a user builds with it (kiln serve, real SDK)', () => {
  const tmp = tempDir('kiln-e2e-basenames-');
  const data = path.join(tmp.dir, 'data');
  let serve: KilnServe;
  let admin: HttpClient;
  let alice: HttpClient;
  const api = async (c: HttpClient, p: string, body: unknown) =>
    c.postJson(p, body, { 'x-csrf-token': await c.apiToken() });

  beforeAll(async () => {
    serve = await startKilnServe(tmp.dir, { KILN_DATA_DIR: data, KILN_SDK_FORMATS: 'raw' });
    const m = /First admin: user "([^"]+)", one-time password "([^"]+)"/.exec(serve.output())!;
    admin = new HttpClient(serve.url);
    expect((await admin.login(m[1]!, m[2]!)).status).toBe(303);
    alice = new HttpClient(serve.url);
    await alice.signUp('alice');
  });
  afterAll(async () => {
    await serve?.stop();
    tmp.cleanup();
  });

  let dfId = 0;

  it('case 13: a user cannot map a name; an admin can, but only to a base in sdk.bases', async () => {
    expect(dockerfile).toContain(`FROM ${NAME}.7\n`);
    const refusedBefore = await api(alice, '/api/dockerfiles', { name: 'ci', content: dockerfile });
    expect(refusedBefore.status).toBe(422);
    const byUser = await api(alice, '/api/admin/base-names', { name: NAME, base: 'debian:bookworm' });
    expect(byUser.status).toBe(403);
    const outside = await api(admin, '/api/admin/base-names', { name: NAME, base: 'debian:sid' });
    expect(outside.status).toBe(422);
    expect(((await outside.json()) as { error: { message: string } }).error.message).toContain(
      'debian:sid is not an allowed base',
    );
    expect((await api(admin, '/api/admin/base-names', { name: NAME, base: 'debian:bookworm' })).status).toBe(201);
    const saved = await api(alice, '/api/dockerfiles', { name: 'ci', content: dockerfile });
    expect(saved.status).toBe(201);
    dfId = ((await saved.json()) as { dockerfile: { id: number } }).dockerfile.id;
  });

  it(
    "the user's Dockerfile FROM the mapped name builds and boots, and manifest and provenance name the base",
    async () => {
      expect(dfId).toBeGreaterThan(0);
      const { id } = await alice.build(dfId);
      const build = await waitForBuild(alice, id);
      const log = ((await (await alice.get(`/api/builds/${id}/log?offset=0`)).json()) as { text: string }).text;
      expect(build.state, `${build.reason}\n${log.slice(-3000)}`).toBe('succeeded');
      expect(log).toMatch(
        new RegExp(
          `\\[kiln\\] FROM ${NAME.replace(/[./]/g, '\\$&')}\\.7 \\(line 4\\) -> Kiln base debian:bookworm = sha256:[0-9a-f]{64} \\(bookworm from \\S+, not slim; via the site's name ${NAME.replace(/[./]/g, '\\$&')}\\)`,
        ),
      );
      expect(log).toContain(`[kiln] ${NAME}.7 is a point release of ${NAME}: Kiln builds bookworm as`);
      const result = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/result.json`)).text()) as {
        bootTests: { artifact: string; passed: boolean }[];
      };
      expect(result.bootTests.find((b) => b.artifact === 'image.raw')?.passed).toBe(true);

      const manifest = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/manifest.json`)).text()) as {
        baseImages: { name: string; id: string; slim: boolean; requestedAs: unknown[] }[];
      };
      expect(manifest.baseImages).toHaveLength(1);
      expect(manifest.baseImages[0]).toMatchObject({
        name: 'debian:bookworm',
        slim: false,
        requestedAs: [
          { line: 4, written: `${NAME}.7`, image: `${NAME}.7`, via: 'point-release', mapping: NAME, source: 'site' },
        ],
      });
      const prov = JSON.parse(await (await alice.get(`/builds/${id}/artifacts/provenance.json`)).text()) as {
        predicate: {
          buildDefinition: {
            resolvedDependencies: { uri: string; digest: { sha256: string }; annotations: Record<string, unknown> }[];
          };
        };
      };
      const dep = prov.predicate.buildDefinition.resolvedDependencies[0]!;
      expect(dep).toMatchObject({
        uri: 'docker-image://debian:bookworm',
        annotations: { suite: 'bookworm', slim: false, requestedAs: [`${NAME}.7`] },
      });
      expect(`sha256:${dep.digest.sha256}`).toBe(manifest.baseImages[0]!.id);
    },
    25 * 60_000,
  );

  it(
    'a mapping that reaches a build although it leads outside sdk.bases (a web configured wider than its builders) is refused by the SDK',
    async () => {
      // The web's own check is proven above; here the row is changed behind its back, as a web whose sdk.bases is
      // wider than the builders' would store it. The SDK must not take the site's word for it.
      const db = createDb({ client: 'sqlite', filename: path.join(data, 'kiln.sqlite') });
      try {
        expect(await db('base_names').where({ name: NAME }).update({ base: 'debian:sid' })).toBe(1);
      } finally {
        await db.destroy();
      }
      const { id } = await alice.build(dfId);
      const build = await waitForBuild(alice, id);
      expect(build.state).toBe('failed');
      expect(build.reason).toContain(
        `FROM ${NAME}.7 is not an allowed base image: the site's admin maps it to debian:sid, which this build host does not allow`,
      );
    },
    10 * 60_000,
  );
});
