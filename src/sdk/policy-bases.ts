import type Dockerode from 'dockerode';
import { KILN_BASE_CONFIG, type BaseImageConfig } from '../dockerfile/policy.js';
import { imageInfo } from './docker-util.js';

/**
 * What the Dockerfile policy must know of each allowed base (src/dockerfile/README.md): its ENV can shadow an ARG,
 * its WORKDIR starts relative ones, its ONBUILD triggers fire at FROM. The engine's own config when the image is
 * there; otherwise what ensureBase will import (no ENV, WORKDIR or triggers).
 */
export async function policyBaseConfigs(
  docker: Dockerode,
  bases: readonly string[],
): Promise<Record<string, BaseImageConfig>> {
  const out: Record<string, BaseImageConfig> = {};
  for (const b of bases) {
    const c = (await imageInfo(docker, b))?.Config;
    out[b] = c ? { env: c.Env ?? [], workdir: c.WorkingDir ?? '', onbuild: c.OnBuild ?? [] } : KILN_BASE_CONFIG;
  }
  return out;
}
