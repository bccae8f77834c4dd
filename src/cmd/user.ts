/**
 * Composition root for `kiln user`: account administration from the machine itself.
 *   kiln user add [--admin] NAME     creates NAME with a generated password, printed once
 *   kiln user passwd NAME            sets a new generated password (ends NAME's sessions), printed once
 *   kiln user disable|enable NAME    disabling ends NAME's sessions on their next request
 *   kiln user admin|unadmin NAME     grants or removes the admin role
 *   kiln user list
 */
import { loadConfig } from '../config/index.js';
import { CLI, PasswordHasher, createUsers } from '../core/index.js';
import { createDbFromConfig, migrateLatest } from '../db/index.js';
import { KilnError } from '../shared/errors.js';
import { createLogger } from '../shared/logger.js';

const USAGE =
  'usage: kiln user add [--admin] NAME | passwd NAME | disable NAME | enable NAME | admin NAME | unadmin NAME | list\n';

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
