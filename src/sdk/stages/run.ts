/**
 * One `kiln sdk build` in progress: what every stage reads (options, settings, the reporter, directories, the
 * build's engine settings) and the few things the run must clean up whatever happens. Stages take it and return
 * what they made; none passes a result out through a variable of the caller's.
 */
import { promises as fsp } from 'node:fs';
import type Dockerode from 'dockerode';
import type { FrozenConfig, OutputFormat } from '../../config/index.js';
import type { BootTestResult } from '../../protocol/sdk-output.js';
import type { BuildProxy } from '../build-proxy.js';
import type { BuildTrust } from '../build-trust.js';
import type { BuildSettings } from '../docker-build.js';
import type { EngineLock } from '../engine-cache.js';
import type { Reporter } from '../reporter.js';
import type { Artifact } from '../result.js';
import type { TreeStaging } from '../staging.js';
import type { GitSource } from '../../protocol/index.js';

export type SdkSettings = FrozenConfig['sdk'];

export interface SdkBuildOptions {
  dockerfile: string;
  outDir: string;
  contextTar?: string;
  /** Where the Dockerfile and context came from (`--source`: a git repository and commit), for the provenance. */
  source?: GitSource;
  formats: readonly OutputFormat[];
  buildArgs: Readonly<Record<string, string>>;
  /** The site admin's names for allowed bases (`--base-name NAME=BASE`); checked again against sdk.bases. */
  baseNames?: readonly { name: string; base: string }[];
  /** Aborts the build (SIGTERM from Jenkins or the local backend): children are stopped, result.json says so. */
  signal?: AbortSignal;
  /** Firmwares to boot-test with; default both (UEFI only when the disk is GPT and OVMF is installed). */
  bootFirmware?: readonly ('bios' | 'uefi')[];
  /** Text every boot test must see on the console (`--expect-console`), besides the image's LABEL io.kiln.expect-console. */
  expectConsole?: readonly string[];
}

export interface SdkDeps {
  docker: Dockerode;
  settings: SdkSettings;
  /** Where stdout-bound text goes (tests may capture it). */
  out?: (s: string) => void;
}

export interface BuildRun {
  deps: SdkDeps;
  o: SdkBuildOptions;
  s: SdkSettings;
  rep: Reporter;
  /** DIR: the artifacts, build.log and result.json. */
  outDir: string;
  /** The run's private scratch directory (0700), removed at the end. */
  work: string;
  formats: OutputFormat[];
  /** The engine build's limits, network and proxy arguments. */
  buildSettings: BuildSettings;
  proxy?: BuildProxy;
  trust?: BuildTrust;
  /** Lines for the manifest's notes: what Kiln changed or added, said plainly. */
  notes: string[];
  /** What result.json lists, as far as the run got: the deliverables once described, each boot test as it ends. */
  artifacts: Artifact[];
  bootTests: BootTestResult[];
  /** Held from the engine stage until the engine's part is over (released at the latest when the run ends). */
  engineLock?: EngineLock;
  /** The staging tree of the exported filesystem (removed when the run ends). */
  trees?: TreeStaging;
  /** The root filesystem's removal once the disk is made (awaited when the run ends). */
  rootfsRemoval?: Promise<void>;
}

export const exists = (p: string): Promise<boolean> =>
  fsp.access(p).then(
    () => true,
    () => false,
  );
