import os from 'node:os';
import type { BaseRecord } from './base-use.js';
import type { GitSource } from '../protocol/index.js';
import type { Artifact } from './result.js';

export const BUILD_TYPE = 'https://kiln.invalid/buildtypes/sdk-build/v1';

export interface ProvenanceInput {
  artifacts: Artifact[];
  /** Other files worth a subject entry (manifest, SBOM). */
  extraSubjects: { name: string; sha256: string }[];
  dockerfileSha256: string;
  contextSha256?: string;
  /** The git repository and commit the Dockerfile and context came from (`kiln sdk build --source`). */
  source?: GitSource | undefined;
  formats: readonly string[];
  /** The built image's LABELs (manifest.ts imageLabels): they describe the artifacts, so each image subject carries them. */
  labels?: Record<string, string>;
  buildArgNames: string[];
  bases: (Pick<BaseRecord, 'name' | 'id'> & Partial<BaseRecord>)[];
  sdkVersion: string;
  settings: {
    buildNetwork: string;
    memoryMb: number;
    cpus: number;
    buildTimeoutSeconds: number;
    maxImageMb: number;
    pidsLimit?: number;
  };
  startedOn: string;
  finishedOn: string;
  /** The build's extra CA certificates (sha256) and proxies (no credentials): they shaped what RUN steps fetched. */
  buildTrust?: { caSha256: string[]; inImage: 'kept' | 'removed' };
  buildProxy?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

/** SLSA's way to name a git source: `git+<repository URL>@<ref>` (as GitHub's own build types write it). */
const sourceUri = (s: GitSource): string => `git+${s.url}@${s.ref}`;
/** The source as a parameter: which ref was asked for and where in the repository the inputs were. */
const sourceParameter = (s: GitSource) => ({ uri: sourceUri(s), dockerfilePath: s.path, contextDir: s.context });
/** The source as a dependency, pinned: the commit the Dockerfile and context were read from. */
const sourceDependency = (s: GitSource) => ({
  uri: sourceUri(s),
  digest: { gitCommit: s.commit },
  annotations: { dockerfilePath: s.path, contextDir: s.context },
});

/**
 * An in-toto Statement v1 with a SLSA v1 provenance predicate. buildType BUILD_TYPE means: "`kiln sdk build` ran
 * the externalParameters' Dockerfile (by digest) with the legacy Docker builder on the listed base images (Kiln-made, by image id, with the names the Dockerfile used for them), then made
 * the subjects from the exported filesystem". Build-arg values are left out (they may hold secrets); only names.
 * Under Jenkins, BUILD_URL becomes the invocation id and JOB_NAME an internal parameter. A Dockerfile fetched from
 * git names its repository and ref as `externalParameters.source` and its commit as the first resolved dependency
 * (`digest.gitCommit`), so the commit is part of the signed record.
 */
export function buildProvenance(i: ProvenanceInput): Record<string, unknown> {
  const env = i.env ?? process.env;
  const stripAlgo = (id: string) => id.replace(/^sha256:/, '');
  return {
    _type: 'https://in-toto.io/Statement/v1',
    subject: [
      ...i.artifacts.map((a) => ({
        name: a.name,
        digest: { sha256: a.sha256 },
        ...(i.labels && Object.keys(i.labels).length ? { annotations: { ...i.labels } } : {}),
      })),
      ...i.extraSubjects.map((s) => ({ name: s.name, digest: { sha256: s.sha256 } })),
    ],
    predicateType: 'https://slsa.dev/provenance/v1',
    predicate: {
      buildDefinition: {
        buildType: BUILD_TYPE,
        externalParameters: {
          dockerfile: { digest: { sha256: i.dockerfileSha256 } },
          ...(i.contextSha256 ? { context: { digest: { sha256: i.contextSha256 } } } : {}),
          ...(i.source ? { source: sourceParameter(i.source) } : {}),
          formats: [...i.formats],
          buildArgs: i.buildArgNames,
        },
        internalParameters: {
          sdkVersion: i.sdkVersion,
          ...i.settings,
          ...(i.buildTrust ? { buildTrust: i.buildTrust } : {}),
          ...(i.buildProxy ? { buildProxy: i.buildProxy } : {}),
          ...(env.JOB_NAME ? { jenkinsJob: env.JOB_NAME } : {}),
        },
        resolvedDependencies: [
          ...(i.source ? [sourceDependency(i.source)] : []),
          ...i.bases.map((b) => ({
            uri: `docker-image://${b.name}`,
            digest: { sha256: stripAlgo(b.id) },
            annotations: {
              ...(b.mirror ? { mirror: b.mirror } : {}),
              ...(b.suite ? { suite: b.suite } : {}),
              ...(b.snapshot ? { snapshot: b.snapshot } : {}),
              ...(b.slim !== undefined ? { slim: b.slim } : {}),
              // The names the Dockerfile used for this base (`debian:12`), as expanded: what a reader of the Dockerfile looks for.
              ...(b.requestedAs ? { requestedAs: [...new Set(b.requestedAs.map((r) => r.image))] } : {}),
            },
          })),
        ],
      },
      runDetails: {
        builder: {
          id: env.KILN_BUILDER_ID ?? `https://kiln.invalid/builders/${encodeURIComponent(os.hostname())}`,
          version: { 'kiln-sdk': i.sdkVersion },
        },
        metadata: {
          invocationId: env.BUILD_URL ?? `urn:kiln:build:${env.KILN_BUILD_ID ?? process.pid}`,
          startedOn: i.startedOn,
          finishedOn: i.finishedOn,
        },
      },
    },
  };
}
