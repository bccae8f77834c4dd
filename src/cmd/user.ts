/**
 * Composition root for `kiln user`: account administration from the machine itself.
 *   kiln user add [--admin] NAME     creates NAME with a generated password, printed once
 *   kiln user passwd NAME            sets a new generated password (ends NAME's sessions), printed once
 *   kiln user disable|enable NAME    disabling ends NAME's sessions on their next request
 *   kiln user admin|unadmin NAME     grants or removes the admin role
 *   kiln user list
 *   kiln user token NAME [--scope read|build|admin]... [--expires 30d|never] [--name LABEL]
 *                                    prints a new API token for NAME on stdout (alone, for $(...)); details on stderr
 */
import { parseArgs } from 'node:util';
import { loadConfig, type FrozenConfig } from '../config/index.js';
import { CLI, PasswordHasher, createTokens, createUsers } from '../core/index.js';
import type { Db } from '../db/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';
import { KilnError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';

const USAGE =
  'usage: kiln user add [--admin] NAME | passwd NAME | disable NAME | enable NAME | admin NAME | unadmin NAME | list\n' +
  '       kiln user token NAME [--scope read|build|admin]... [--expires 30d|never] [--name LABEL]\n';

/** `kiln user token`: a token for NAME, for a pipeline set up from the server's shell (default scope: read). */
async function token(config: FrozenConfig, db: Db, argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        scope: { type: 'string', multiple: true },
        expires: { type: 'string' },
        name: { type: 'string' },
      },
    });
  } catch (e) {
    process.stderr.write(`kiln user token: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const [username, ...extra] = parsed.positionals;
  if (!username || extra.length) {
    process.stderr.write(USAGE);
    return 2;
  }
  const t = await createTokens({
    db,
    config,
    logger: createLogger({ level: config.log.level, name: 'kiln-user' }),
  }).create(CLI, {
    username,
    name: parsed.values.name ?? 'kiln user token',
    scopes: (parsed.values.scope ?? ['read']).flatMap((s) => s.split(',')),
    ...(parsed.values.expires !== undefined ? { expires: parsed.values.expires } : {}),
  });
  process.stdout.write(`${t.token}\n`);
  process.stderr.write(
    `API token "${t.row.name}" for ${username}: scopes ${t.row.scopes.join(', ')}, ${t.row.expires_at ? `expires ${t.row.expires_at}` : 'does not expire'}. It is shown this once.\n`,
  );
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help') {
    process.stdout.write(USAGE);
    return sub ? 0 : 2;
  }
  const config = loadConfig();
  const db = createDbFromConfig(config);
  try {
    await migrateLatest(db);
    const users = createUsers({
      db,
      hasher: new PasswordHasher(1),
      logger: createLogger({ level: config.log.level, name: 'kiln-user' }),
    });
    if (sub === 'token') return await token(config, db, rest);
    if (sub === 'list') {
      for (const u of await users.list(CLI)) {
        process.stdout.write(`${u.username}\t${u.role}${u.disabled ? '\tdisabled' : ''}\t${u.created_at}\n`);
      }
      return 0;
    }
    const admin = rest.includes('--admin');
    const names = rest.filter((a) => a !== '--admin');
    if (names.length !== 1 || (admin && sub !== 'add')) {
      process.stderr.write(USAGE);
      return 2;
    }
    const name = names[0];
    if (sub === 'add') {
      const u = await users.create(CLI, { username: name, role: admin ? 'admin' : 'user' });
      process.stdout.write(`created ${admin ? 'admin' : 'user'} "${u.username}"\none-time password: ${u.password}\n`);
      return 0;
    }
    switch (sub) {
      case 'passwd': {
        const u = await users.resetPassword(CLI, { username: name });
        process.stdout.write(`new password for "${u.username}": ${u.password}\n`);
        return 0;
      }
      case 'disable':
        await users.setDisabled(CLI, { username: name, disabled: true });
        break;
      case 'enable':
        await users.setDisabled(CLI, { username: name, disabled: false });
        break;
      case 'admin':
        await users.setRole(CLI, { username: name, role: 'admin' });
        break;
      case 'unadmin':
        await users.setRole(CLI, { username: name, role: 'user' });
        break;
      default:
        process.stderr.write(USAGE);
        return 2;
    }
    process.stdout.write(`${sub}: ${name}\n`);
    return 0;
  } catch (e) {
    if (e instanceof KilnError) {
      process.stderr.write(`kiln user: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    await db.destroy();
  }
}
