/**
 * Runs one SSH door command as the key's user, through the same use cases the web and its API call, and turns the
 * outcome into text and an exit status. Everything printed that a user or a build wrote (a reason, log lines) has
 * its escapes and control characters stripped first: it goes to someone's terminal.
 */
import { randomBytes } from 'node:crypto';
import type { FrozenConfig } from '../config/index.js';
import { decodeDockerfile, dockerfileTooLarge, plainLine, type Core, type UserActor } from '../core/index.js';
import type { BuildRow, BuildSummary } from '../db/index.js';
import { KilnError, isKilnError, toKilnError } from '../shared/errors.js';
import { EXIT, EXIT_HELP, exitStatusFor } from '../shared/exit-status.js';
import type { Logger } from '../shared/logger.js';
import { parseDoorCommand, UsageError, type DoorCommand } from './command.js';

export interface CommandIo {
  /** Writes to the client's stdout / stderr, waiting while it is not reading; rejects when it gives up or leaves. */
  out(text: string): Promise<void>;
  err(text: string): Promise<void>;
  /** The client's stdin to its end: at most `max` bytes (else too_large), in limited time (else timeout). */
  readStdin(max: number): Promise<Buffer>;
  /** Aborted when the client goes away or the server stops. */
  signal: AbortSignal;
}

export interface DoorContext {
  core: Core;
  config: FrozenConfig;
  logger: Logger;
  /** Who the connection's key logs in as now: undefined once the key is revoked or the account disabled. */
  who(): Promise<UserActor | undefined>;
  /** The key's name, for the greeting. */
  keyName: string;
  /** `ssh -p PORT kiln@HOST`, as users type it. */
  sshCommand: string;
  /** How often a follow checks that the key still opens Kiln. */
  recheckMs: number;
}

const REVOKED = 'kiln: this key no longer opens Kiln (it was revoked, or the account is disabled).\n';

export function usage(sshCommand: string): string {
  return `usage: ${sshCommand} COMMAND
  build NAME [--no-follow] < Dockerfile   save the Dockerfile NAME (new, or a new version) and build it; follows
                                          its log to the end (--no-follow: print the build's number only)
  status ID                               a build's state, times and artifacts
  log ID [--no-follow]                    a build's log, followed until the build ends
  list                                    your latest builds
  help                                    this text
${EXIT_HELP}`;
}

/** Parses and runs one command line; resolves to its exit status (never rejects). */
export async function runDoorCommand(ctx: DoorContext, line: string, io: CommandIo): Promise<number> {
  let cmd: DoorCommand;
  try {
    cmd = parseDoorCommand(line);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    await io.err(`kiln: ${e.message}\n${usage(ctx.sshCommand)}`).catch(() => undefined);
    return EXIT.usage;
  }
  try {
    const actor = await ctx.who();
    if (!actor) {
      await io.err(REVOKED);
      return EXIT.auth;
    }
    return await run(ctx, actor, cmd, line === '', io);
  } catch (e) {
    const err = toKilnError(e);
    if (err.code === 'internal') ctx.logger.error({ err: e, verb: cmd.verb }, 'ssh door: command failed');
    await io.err(`kiln: ${plainLine(err.message)}\n${findings(err)}`).catch(() => undefined);
    // The door checks every other argument itself (usage): bad input can only be the Dockerfile on stdin.
    return exitStatusFor(err.code, { dockerfileSent: cmd.verb === 'build' });
  }
}

/** A policy refusal's findings, one per line (they quote the user's own Dockerfile). */
function findings(e: KilnError): string {
  if (e.code !== 'policy_violation' || !Array.isArray(e.detail)) return '';
  return (e.detail as Array<{ line: number; message: string }>)
    .map((f) => `  line ${f.line}: ${plainLine(String(f.message))}\n`)
    .join('');
}

async function run(ctx: DoorContext, actor: UserActor, cmd: DoorCommand, bare: boolean, io: CommandIo) {
  const { core } = ctx;
  switch (cmd.verb) {
    case 'help':
      if (bare)
        await io.err(
          `Hi ${actor.username}! You are in with your key "${plainLine(ctx.keyName)}", but Kiln offers no shell.\n`,
        );
      await io.out(usage(ctx.sshCommand));
      return EXIT.usage;
    case 'build':
      return build(ctx, actor, cmd, io);
    case 'status':
      await io.out(statusText(ctx, await core.builds.version(actor, cmd.id)));
      return EXIT.succeeded;
    case 'log':
      if (cmd.follow) return follow(ctx, actor, Number(cmd.id), io);
      return printLog(ctx, actor, cmd.id, io);
    case 'list':
      await io.out(listText(actor, await core.builds.list(actor, 20)));
      return EXIT.succeeded;
  }
}

/** A new idempotency key per `build` (the protocol's key pattern): an SSH command is never retried as it is. */
const newKey = (): string => `s${randomBytes(18).toString('base64url')}`;

async function build(
  ctx: DoorContext,
  actor: UserActor,
  cmd: Extract<DoorCommand, { verb: 'build' }>,
  io: CommandIo,
): Promise<number> {
  const max = ctx.config.web.maxDockerfileBytes;
  let bytes: Buffer;
  try {
    bytes = await io.readStdin(max);
  } catch (e) {
    if (isKilnError(e, 'too_large')) throw dockerfileTooLarge(max);
    if (!isKilnError(e, 'timeout')) throw e;
    // A client that sends no end of file was not told how to use `build`: usage, not a refused Dockerfile.
    await io.err(`kiln: no Dockerfile arrived on stdin in time: send one with \`< Dockerfile\`.\n`);
    return EXIT.usage;
  }
  const content = decodeDockerfile(bytes, max);
  const { view, created } = await ctx.core.dockerfiles.put(actor, { name: cmd.name, content });
  const { dockerfile, version } = view;
  const { build: b } = await ctx.core.builds.request(actor, {
    dockerfileId: String(dockerfile.id),
    key: newKey(),
    trigger: 'ssh',
  });
  if (!cmd.follow) {
    await io.out(`${b.id}\n`);
    return EXIT.succeeded;
  }
  // The text just sent is the current version (a git Dockerfile given text becomes an ordinary one).
  const sha = version ? `, sha256:${version.sha256.slice(0, 12)}` : '';
  const saved = `${created ? 'new Dockerfile' : 'Dockerfile saved'}${sha}`;
  await io.err(`kiln: build ${b.id} of ${dockerfile.name} requested (${saved})${link(ctx, b.id)}\n`);
  return follow(ctx, actor, b.id, io);
}

const link = (ctx: DoorContext, id: number): string =>
  ctx.config.web.publicUrl ? `: ${ctx.config.web.publicUrl.replace(/\/+$/, '')}/builds/${id}` : '';

/**
 * Prints a build's log from the start as it grows, until the build ends; the exit status is the build's. Every
 * `recheckMs` the key must still open Kiln for the same user, or following stops (the build goes on).
 */
async function follow(ctx: DoorContext, actor: UserActor, id: number, io: CommandIo): Promise<number> {
  const revoke = new AbortController();
  const stop = AbortSignal.any([io.signal, revoke.signal]);
  let revoked = false;
  let checking = false;
  const recheck = setInterval(() => {
    if (checking) return;
    checking = true;
    ctx
      .who()
      .then(
        (now) => {
          if (now?.id === actor.id) return;
          revoked = true;
          revoke.abort();
        },
        (e: unknown) => ctx.logger.warn({ err: e }, 'ssh door: could not check the key again'),
      )
      .finally(() => (checking = false));
  }, ctx.recheckMs);
  let last: BuildRow | undefined;
  let ended = false;
  try {
    const events = await ctx.core.builds.follow(actor, String(id), '0', stop, 'text');
    for await (const ev of events) {
      if (ev.type === 'log') {
        if (ev.lines.length) await io.out(ev.lines.map((l) => `${l}\n`).join(''));
      } else if (ev.type === 'build') {
        if (last && last.state !== ev.build.state && !['succeeded', 'failed', 'cancelled'].includes(ev.build.state))
          await io.err(`kiln: build ${id} is ${ev.build.state}\n`);
        last = ev.build;
      } else if (ev.type === 'end') {
        ended = true;
        break;
      }
    }
  } finally {
    clearInterval(recheck);
  }
  if (revoked) {
    await io.err(`${REVOKED}kiln: build ${id} goes on.\n`);
    return EXIT.auth;
  }
  if (!ended || !last) {
    await io.err(`kiln: stopped following build ${id}; it goes on (\`log ${id}\` follows it again).\n`);
    return EXIT.unavailable;
  }
  const reason = last.reason ? `: ${plainLine(last.reason)}` : '';
  await io.err(`kiln: build ${id} ${last.state}${last.state === 'succeeded' ? '' : reason}${link(ctx, id)}\n`);
  if (last.state === 'succeeded') return EXIT.succeeded;
  return last.state === 'cancelled' ? EXIT.cancelled : EXIT.failed;
}

/** The log as it is now, in chunks, without waiting for more. */
async function printLog(ctx: DoorContext, actor: UserActor, id: string, io: CommandIo): Promise<number> {
  let offset = 0;
  for (;;) {
    const chunk = await ctx.core.builds.log(actor, id, String(offset));
    if (chunk.text) await io.out(chunk.text);
    if (chunk.nextOffset <= offset) return EXIT.succeeded;
    offset = chunk.nextOffset;
  }
}

const row = (label: string, value: string | number | null | undefined): string =>
  value === null || value === undefined || value === '' ? '' : `${label.padEnd(11)}${value}\n`;

function statusText(
  ctx: DoorContext,
  v: { build: BuildRow; dockerfile: { id: number; name: string }; versionSha: string },
): string {
  const b = v.build;
  return (
    row('build', b.id) +
    row('dockerfile', `${v.dockerfile.name} (${v.dockerfile.id})`) +
    row('state', b.state) +
    row('reason', b.reason && plainLine(b.reason)) +
    row('trigger', b.trigger) +
    row('requested', b.requested_at) +
    row('queued', b.queued_at) +
    row('started', b.started_at) +
    row('finished', b.finished_at) +
    b.artifacts
      .map((a) => row('artifact', `${a.name} ${a.size} bytes${a.sha256 ? ` sha256:${a.sha256}` : ''}`))
      .join('') +
    row('url', link(ctx, b.id).slice(2))
  );
}

function listText(actor: UserActor, builds: BuildSummary[]): string {
  const admin = actor.role === 'admin';
  const cols = (b: { id: unknown; state: string; name: string; owner: string; at: string }) =>
    `${String(b.id).padEnd(8)}${b.state.padEnd(11)}${b.name.padEnd(24)}${admin ? b.owner.padEnd(16) : ''}${b.at}\n`;
  return (
    cols({ id: 'ID', state: 'STATE', name: 'DOCKERFILE', owner: 'OWNER', at: 'REQUESTED' }) +
    builds
      .map((b) => cols({ id: b.id, state: b.state, name: b.dockerfile_name, owner: b.owner, at: b.requested_at }))
      .join('')
  );
}
