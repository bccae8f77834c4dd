#!/usr/bin/env node
/**
 * `kiln <command>`: the single executable. Each command lives in its own composition root under src/cmd/ and is
 * loaded only when asked for, so `kiln glue` (run per SSH request) does not load Express or dockerode.
 */
const COMMANDS: Record<string, { summary: string; load: () => Promise<{ main(argv: string[]): Promise<number> }> }> = {
  serve: {
    summary: 'run the embedded setup: web site + built-in SSH glue + local backend',
    load: () => import('./serve.js'),
  },
  web: { summary: 'run the web site only (glue reached over SSH)', load: () => import('./web.js') },
  worker: {
    summary: 'run the task worker alone (dispatch, refresh, verification of builds) on the configured database',
    load: () => import('./worker.js'),
  },
  glue: {
    summary: 'run one glue request (OpenSSH forced command: request in SSH_ORIGINAL_COMMAND)',
    load: () => import('./glue.js'),
  },
  'glue-server': {
    summary: 'run the built-in ssh2 glue server with its backend',
    load: () => import('./glue-server.js'),
  },
  sdk: {
    summary: 'build a Dockerfile into a bootable image (`kiln sdk build --help`)',
    load: () => import('./sdk.js'),
  },
  verify: {
    summary: 'check a downloaded build or release: checksums, signature, SBOM',
    load: () => import('./verify.js'),
  },
  client: {
    summary: 'use Kiln from a CI job: build, wait, download (`kiln client --help`; KILN_URL, KILN_TOKEN)',
    load: () => import('./client.js'),
  },
  user: { summary: 'manage users (`kiln user add --admin NAME`)', load: () => import('./user.js') },
  keys: { summary: "make the web's signing key (`kiln keys generate`)", load: () => import('./keys.js') },
  migrate: { summary: 'apply database migrations', load: () => import('./migrate.js') },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const cmd = name && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) {
    const lines = Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(12)} ${v.summary}`);
    process.stderr.write(`usage: kiln <command> [options]\n\n${lines.join('\n')}\n`);
    return name === undefined || name === '--help' ? 0 : 2;
  }
  const mod = await cmd.load();
  return mod.main(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`kiln: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
