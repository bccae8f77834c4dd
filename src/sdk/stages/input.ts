/** The first stages: the Dockerfile checked by the policy, the inputs' digests, the engine entered, the bases made. */
import { promises as fsp } from 'node:fs';
import { baseNameList } from '../../dockerfile/base-names.js';
import { checkDockerfile, type PolicyResult } from '../../dockerfile/policy.js';
import { KilnError } from '../../shared/errors.js';
import { ensureBase, type BaseImage } from '../base.js';
import { logBaseUse } from '../base-use.js';
import { describeProxy } from '../build-proxy.js';
import { describeTrust, loadBuildTrust } from '../build-trust.js';
import { sweepBuildCgroups } from '../cgroup.js';
import { contextDigest } from '../docker-build.js';
import { enterEngine, KILN_CACHE, type EngineLock } from '../engine-cache.js';
import { verifyEngineGuard } from '../engine-guard.js';
import { policyBaseConfigs } from '../policy-bases.js';
import { sha256File } from '../result.js';
import type { BuildRun, SdkDeps } from './run.js';

const MAX_DOCKERFILE_BYTES = 1 << 20;

export function readDockerfile(buf: Buffer): string {
  if (buf.length > MAX_DOCKERFILE_BYTES) throw new KilnError('too_large', 'The Dockerfile is larger than 1 MiB');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw new KilnError('invalid_input', 'The Dockerfile is not valid UTF-8');
  }
  if (text.includes('\0')) throw new KilnError('invalid_input', 'The Dockerfile contains a NUL byte');
  return text;
}

export interface CheckedInput {
  text: string;
  policy: PolicyResult;
  dockerfileSha256: string;
  contextSha256?: string;
}

/** The policy (with the engine's base configs and the build args), the inputs' digests, build trust loaded. */
export async function checkInput(run: BuildRun): Promise<CheckedInput> {
  const { deps, o, s, rep } = run;
  const { text, policy } = await rep.stage('policy', 2, 'checking the Dockerfile', async () => {
    const text = readDockerfile(await fsp.readFile(o.dockerfile));
    const baseConfigs = await policyBaseConfigs(deps.docker, s.bases);
    const baseNames = baseNameList(o.baseNames ?? [], s.baseNames);
    const policy = checkDockerfile(text, {
      bases: s.bases,
      baseNames,
      allowRemoteAdd: s.allowRemoteAdd,
      buildArgs: o.buildArgs,
      baseConfigs,
    });
    return { text, policy };
  });
  const dockerfileSha256 = await sha256File(o.dockerfile);
  const contextSha256 = o.contextTar
    ? await contextDigest(o.contextTar).catch(() => {
        throw new KilnError('invalid_input', 'The build context does not exist or cannot be read');
      })
    : undefined;
  run.trust = await loadBuildTrust(s.buildTrust);
  if (run.trust) rep.log(`[kiln] ${describeTrust(run.trust)}`);
  for (const line of run.proxy ? describeProxy(run.proxy, text, o.buildArgs, s.buildNetwork) : [])
    rep.log(`[kiln] ${line}`);
  return { text, policy, dockerfileSha256, ...(contextSha256 !== undefined ? { contextSha256 } : {}) };
}

/**
 * Before anything reaches the engine: leftovers of dead builds go, the engine must be guarded (sdk.engineGuard), the
 * layer cache is pruned, and the engine's lock is taken for this build (engine-cache.ts). Returns the lock.
 */
async function enterEngineStage(deps: SdkDeps, rep: BuildRun['rep']): Promise<EngineLock> {
  const s = deps.settings;
  const swept = await sweepBuildCgroups().catch(() => [] as string[]);
  if (swept.length) rep.log(`[kiln] removed ${swept.length} empty build cgroup(s) left by builds whose SDK is gone`);
  rep.log(
    `[kiln] ${s.engineGuard === 'verify' ? await verifyEngineGuard(deps.docker) : 'engine guard not verified (sdk.engineGuard=off)'}`,
  );
  const entered = await enterEngine(deps.docker, {
    budgetBytes: s.imageCacheMb * 2 ** 20,
    maxAgeMs: s.imageCacheHours * 3_600_000,
    selector: KILN_CACHE,
  });
  rep.log(`[kiln] ${entered.note}`);
  return entered.lock;
}

/** Enters the engine (its lock is the run's until released) and makes (or reuses) every base the policy named. */
export async function enterEngineAndBases(run: BuildRun, policy: PolicyResult): Promise<BaseImage[]> {
  const { deps, s, rep } = run;
  run.engineLock = await rep.stage('engine', 4, 'engine guard, layer cache', () => enterEngineStage(deps, rep));
  return rep.stage('base', 5, `base images: ${policy.bases.join(', ') || 'none'}`, async () => {
    const out: BaseImage[] = [];
    for (const b of policy.bases)
      out.push(
        await ensureBase(
          deps.docker,
          b,
          { mirror: s.mirror, devuanMirror: s.devuanMirror, devuanKeyring: s.devuanKeyring, snapshot: s.snapshot },
          run.work,
          rep,
        ),
      );
    logBaseUse(rep, policy.froms, out);
    return out;
  });
}
