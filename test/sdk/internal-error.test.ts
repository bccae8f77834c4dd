/**
 * Finding 12: an internal error's text (paths, hosts, engine internals) went into result.json and from there onto
 * the build page. The user now gets a reference; the detail goes to a file for the operator, never an artifact.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { ARTIFACT_NAMES, SDK_INTERNAL_ERROR_FILE } from '../../src/protocol/index.js';
import { sdkBuild } from '../../src/sdk/pipeline.js';
import { tempDir } from '../helpers/tmp.js';

const tmp = tempDir('kiln-sdk-internal-');
afterAll(() => tmp.cleanup());

describe('SDK internal errors', () => {
  it('finding 12: result.json and the build log carry a reference, not the error text; the detail is in internal-error.log', async () => {
    // An unreadable Dockerfile is not a case the pipeline names: it surfaces as an internal error whose message
    // (ENOENT and the full path) is exactly the kind of detail a user must not see.
    const secretPath = path.join(tmp.dir, 'srv-kiln-internal-layout', 'Dockerfile');
    const out = path.join(tmp.dir, 'out');
    const result = await sdkBuild(
      {
        docker: new Dockerode({ socketPath: path.join(tmp.dir, 'no-engine.sock') }),
        settings: loadConfig({}).sdk,
        out: () => undefined,
      },
      { dockerfile: secretPath, outDir: out, formats: ['raw'], buildArgs: {} },
    );
    expect(result.ok).toBe(false);
    expect(result.error?.code).toBe('internal');
    const ref = /reference ([0-9a-f]{12})/.exec(result.error!.message)?.[1];
    expect(ref).toBeDefined();
    expect(result.error!.message).not.toContain('srv-kiln-internal-layout');
    expect(result.error!.message).not.toContain('ENOENT');
    const written = readFileSync(path.join(out, 'result.json'), 'utf8');
    expect(written).not.toContain('srv-kiln-internal-layout');
    expect(readFileSync(path.join(out, 'build.log'), 'utf8')).not.toContain('srv-kiln-internal-layout');
    const detail = readFileSync(path.join(out, SDK_INTERNAL_ERROR_FILE), 'utf8');
    expect(detail).toContain(`reference ${ref}`);
    expect(detail).toContain('srv-kiln-internal-layout');
    expect((ARTIFACT_NAMES as readonly string[]).includes(SDK_INTERNAL_ERROR_FILE)).toBe(false);
    expect(existsSync(path.join(out, 'image.raw'))).toBe(false);
  });
});
