import { promises as fsp } from 'node:fs';
import { parseArgs } from 'node:util';
import Dockerode from 'dockerode';
import { loadConfig, OUTPUT_FORMATS, type OutputFormat } from '../config/index.js';
import { checkDockerfile, kilnBaseConfigs, type Violation } from '../dockerfile/policy.js';
import { KilnError, toKilnError } from '../shared/errors.js';
import { buildNetworkUrls } from '../sdk/build-proxy.js';
import { baseNameList, parseBaseNameEntry } from '../dockerfile/base-names.js';
import { IMAGE_NAME_RE, gitSourceSchema, type GitSource } from '../protocol/index.js';
import { consoleExpectations } from '../sdk/expect-console.js';
import { allowances, egressRules, lanNetworks, parseAllow, resolvers } from '../sdk/egress.js';
import { readDockerfile, sdkBuild } from '../sdk/pipeline.js';
import { writeFailureResult } from '../sdk/result.js';
import { SDK_VERSION } from '../sdk/version.js';

const USAGE = `usage: kiln sdk build --dockerfile FILE --out DIR [--context TAR|DIR] [--source FILE] [--format raw,qcow2,tar,iso]
                      [--build-arg K=V]... [--base-name NAME=BASE]... [--boot-firmware bios,uefi]
                      [--expect-console TEXT]...
       kiln sdk check --dockerfile FILE [--build-arg K=V]... [--base-name NAME=BASE]... [--context TAR|DIR]
       kiln sdk egress-rules [--engine-iptables] [--ipv6] [--resolver IP]... [--lan CIDR]...

Builds the Dockerfile with the local Docker engine, turns the result into a bootable disk image, boot-tests it in
QEMU and writes DIR/image.*, DIR/build.log and DIR/result.json. Progress events are printed as '##kiln {json}' lines.
Settings come from KILN_SDK_* environment variables (see src/config). Exit 0 when the image built and booted.
--base-name: the site admin's name for a base in sdk.bases (e.g. corp/debian:12=debian:bookworm), on top of
sdk.baseNames; one that leads to a base this host does not allow makes a FROM using it a policy finding.
--source FILE: where the Dockerfile and context came from (JSON: type git, url, ref, commit, path, context, as the
glue writes it); named in provenance.json (the commit as a resolved dependency) and manifest.json.
--expect-console TEXT: a boot test passes only once TEXT (literal, one line) shows on the serial console, as does
the text of the image's LABEL io.kiln.expect-console; a failure names the text that never showed.

check runs only the Dockerfile policy (src/dockerfile/README.md) with sdk.bases and sdk.allowRemoteAdd, taking the
allowed bases to be as Kiln makes them (build checks again with the engine's): it prints each finding with its line
number and exits 0 when there is none, else 1 with {"error":{"code":"policy_violation",...}} on stderr.

egress-rules prints the filter of the build network (src/sdk/README.md) as iptables-restore --noflush input, for an
engine on another host (sdk.egressRules=external): --engine-iptables for an engine that manages iptables itself
(jumps from DOCKER-USER, its NAT kept). Resolvers and LAN default to this machine's.
`;

/** Composition root for `kiln sdk`: parses argv, loads config, builds the dockerode client, runs the pipeline. */
export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    process.stdout.write(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === 'egress-rules') return egressRulesCommand(rest);
  if (sub === 'check') return checkCommand(rest);
  if (sub !== 'build') {
    process.stderr.write(`kiln sdk: unknown subcommand ${JSON.stringify(sub)}\n${USAGE}`);
    return 2;
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        dockerfile: { type: 'string' },
        out: { type: 'string' },
        context: { type: 'string' },
        source: { type: 'string' },
        format: { type: 'string' },
        'build-arg': { type: 'string', multiple: true },
        'base-name': { type: 'string', multiple: true },
        'boot-firmware': { type: 'string' },
        'expect-console': { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    process.stderr.write(`kiln sdk build: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.dockerfile || !values.out) {
    process.stderr.write(`kiln sdk build: --dockerfile and --out are required\n${USAGE}`);
    return 2;
  }
  try {
    const config = loadConfig();
    const formats = (
      values.format
        ? values.format
            .split(',')
            .map((f) => f.trim())
            .filter(Boolean)
        : [...config.sdk.formats]
    ) as OutputFormat[];
    for (const f of formats) {
      if (!(OUTPUT_FORMATS as readonly string[]).includes(f))
        throw new KilnError('invalid_input', `Unknown format ${f}; known: ${OUTPUT_FORMATS.join(', ')}`);
    }
    const buildArgs = parseBuildArgs(values['build-arg']);
    const baseNames = parseBaseNames(values['base-name']);
    let bootFirmware: ('bios' | 'uefi')[] | undefined;
    if (values['boot-firmware'] !== undefined) {
      bootFirmware = values['boot-firmware']
        .split(',')
        .map((f) => f.trim())
        .filter(Boolean) as ('bios' | 'uefi')[];
      if (bootFirmware.some((f) => f !== 'bios' && f !== 'uefi'))
        throw new KilnError('invalid_input', '--boot-firmware takes bios, uefi or bios,uefi');
    }
    const expectConsole = values['expect-console'] ?? [];
    consoleExpectations(expectConsole); // refuses bad text now, with exit 2, before anything is built
    // Jenkins (abort) and the local backend (cancel) send SIGTERM: stop QEMU and the engine build, still write result.json.
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const docker = new Dockerode({ socketPath: process.env.DOCKER_SOCKET ?? '/var/run/docker.sock' });
    const result = await sdkBuild(
      { docker, settings: config.sdk },
      {
        dockerfile: values.dockerfile,
        outDir: values.out,
        contextTar: values.context,
        ...(values.source !== undefined ? { source: await readSource(values.source) } : {}),
        formats,
        buildArgs,
        baseNames,
        bootFirmware,
        expectConsole,
        signal: ac.signal,
      },
    );
    if (!result.ok) process.stderr.write(`kiln sdk build: ${result.error?.code}: ${result.error?.message}\n`);
    return result.ok ? 0 : 1;
  } catch (e) {
    const ke = reportError(e);
    await writeFailureResult(values.out, SDK_VERSION, ke.toJSON()).catch(() => undefined);
    return ke.code === 'invalid_input' ? 2 : 1;
  }
}

/** `--source FILE`: the git source (JSON, protocol.gitSourceSchema) the Dockerfile came from, for the provenance. */
async function readSource(file: string): Promise<GitSource> {
  const text = await fsp.readFile(file, 'utf8').catch(() => {
    throw new KilnError('invalid_input', '--source: the file cannot be read');
  });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new KilnError('invalid_input', '--source: the file is not JSON');
  }
  const r = gitSourceSchema.safeParse(raw);
  if (!r.success) throw new KilnError('invalid_input', `--source: ${r.error.issues[0]?.message ?? 'not a git source'}`);
  return r.data;
}

function parseBuildArgs(kvs: readonly string[] | undefined): Record<string, string> {
  const buildArgs: Record<string, string> = {};
  for (const kv of kvs ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_]{0,127})=(.*)$/s.exec(kv);
    if (!m)
      throw new KilnError('invalid_input', `--build-arg must be NAME=VALUE, got ${JSON.stringify(kv.slice(0, 80))}`);
    buildArgs[m[1]!] = m[2]!;
  }
  return buildArgs;
}

/** `--base-name NAME=BASE`, each side an image name as the job spec allows it (protocol IMAGE_NAME_RE). */
function parseBaseNames(entries: readonly string[] | undefined): { name: string; base: string }[] {
  return (entries ?? []).map((e) => {
    const m = parseBaseNameEntry(e, 'site');
    if (!m || !IMAGE_NAME_RE.test(m.name) || !IMAGE_NAME_RE.test(m.base))
      throw new KilnError(
        'invalid_input',
        `--base-name must be NAME=BASE, two image names, got ${JSON.stringify(e.slice(0, 80))}`,
      );
    return { name: m.name, base: m.base };
  });
}

/** A refusal as JSON on stderr (with the policy's findings, when it is one); returns it as a KilnError. */
function reportError(e: unknown): KilnError {
  const ke = toKilnError(e);
  const findings =
    ke.code === 'policy_violation' && Array.isArray(ke.detail) ? { findings: ke.detail as Violation[] } : {};
  process.stderr.write(JSON.stringify({ error: { ...ke.toJSON(), ...findings } }) + '\n');
  return ke;
}

/** `kiln sdk check`: the Dockerfile policy alone, nothing built. */
async function checkCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        dockerfile: { type: 'string' },
        'build-arg': { type: 'string', multiple: true },
        'base-name': { type: 'string', multiple: true },
        context: { type: 'string' },
      },
    }));
  } catch (e) {
    process.stderr.write(`kiln sdk check: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.dockerfile) {
    process.stderr.write(`kiln sdk check: --dockerfile is required\n${USAGE}`);
    return 2;
  }
  try {
    const s = loadConfig().sdk;
    const buildArgs = parseBuildArgs(values['build-arg']);
    const baseNames = baseNameList(parseBaseNames(values['base-name']), s.baseNames);
    if (values.context !== undefined) {
      await fsp.access(values.context).catch(() => {
        throw new KilnError('invalid_input', 'The build context does not exist or cannot be read');
      });
    }
    const buf = await fsp.readFile(values.dockerfile).catch(() => {
      throw new KilnError('invalid_input', 'The Dockerfile does not exist or cannot be read');
    });
    const r = checkDockerfile(readDockerfile(buf), {
      bases: s.bases,
      baseNames,
      allowRemoteAdd: s.allowRemoteAdd,
      buildArgs,
      baseConfigs: kilnBaseConfigs(s.bases),
    });
    process.stdout.write(
      `ok: no findings (${r.stages} stage${r.stages === 1 ? '' : 's'}; bases: ${r.bases.join(', ') || 'none'})\n`,
    );
    return 0;
  } catch (e) {
    const ke = toKilnError(e);
    if (ke.code === 'policy_violation' && Array.isArray(ke.detail)) {
      // The messages quote the Dockerfile: no control character reaches the terminal.

      const visible = (t: string) =>
        // eslint-disable-next-line no-control-regex -- control characters are refused or stripped here on purpose
        t.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
      for (const f of ke.detail as Violation[]) process.stdout.write(`line ${f.line}: ${visible(f.message)}\n`);
    }
    return reportError(ke).code === 'invalid_input' ? 2 : 1;
  }
}

/** `kiln sdk egress-rules`: the build network's filter as text, for a host where the SDK does not apply it. */
async function egressRulesCommand(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        'engine-iptables': { type: 'boolean' },
        ipv6: { type: 'boolean' },
        resolver: { type: 'string', multiple: true },
        lan: { type: 'string', multiple: true },
      },
    }));
  } catch (e) {
    process.stderr.write(`kiln sdk egress-rules: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  try {
    const s = loadConfig().sdk;
    const asCidrs = (xs: string[], what: string, single: boolean) =>
      parseAllow(xs).map((a) => {
        if (a.port !== undefined || (single && !a.cidr.endsWith('/32'))) {
          throw new KilnError(
            'invalid_input',
            `${what} takes ${single ? 'one IPv4 address' : 'an IPv4 address or CIDR'} without a port`,
          );
        }
        return single ? a.cidr.slice(0, -3) : a.cidr;
      });
    const resolverList = values.resolver ? asCidrs(values.resolver, '--resolver', true) : await resolvers();
    const lan = values.lan ? asCidrs(values.lan, '--lan', false) : await lanNetworks(s.buildSubnet);
    const allowed = await allowances(buildNetworkUrls(s), s.egressAllow);
    const rules = egressRules(
      { subnet: s.buildSubnet, resolvers: resolverList, allowed, lan },
      values['engine-iptables'] === true,
    );
    process.stdout.write(values.ipv6 ? rules.v6 : rules.v4);
    return 0;
  } catch (e) {
    process.stderr.write(`kiln sdk egress-rules: ${toKilnError(e).message}\n`);
    return 2;
  }
}
