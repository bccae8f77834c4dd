/**
 * Composition root for `kiln user`: account administration from the machine itself.
 *   kiln user add [--admin] NAME     creates NAME with a generated password, printed once
 *   kiln user passwd NAME            sets a new generated password (ends NAME's sessions), printed once
 *   kiln user disable|enable NAME    disabling ends NAME's sessions on their next request
 *   kiln user admin|unadmin NAME     grants or removes the admin role
 *   kiln user list
 */
import { loadConfig } from '../config/index.js';
import { createDbFromConfig, findUserByName, listUsers, migrateLatest, setUserDisabled, setUserPassword, setUserRole } from '../db/index.js';
import { KilnError } from '../shared/errors.js';
import { addUser, PasswordHasher } from '../web/index.js';
import { generatePassword } from '../web/services/passwords.js';
import { parseUsername } from '../web/validation.js';

const USAGE = 'usage: kiln user add [--admin] NAME | passwd NAME | disable NAME | enable NAME | admin NAME | unadmin NAME | list\n';

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
    if (sub === 'list') {
      for (const u of await listUsers(db)) {
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
    const name = parseUsername(names[0]);
    if (sub === 'add') {
      const u = await addUser(db, name, admin ? 'admin' : 'user');
      process.stdout.write(`created ${admin ? 'admin' : 'user'} "${u.username}"\none-time password: ${u.password}\n`);
      return 0;
    }
    const user = await findUserByName(db, name);
    if (!user) throw new KilnError('not_found', `no user "${name}"`);
    switch (sub) {
      case 'passwd': {
        const pw = generatePassword();
        await setUserPassword(db, user.id, await new PasswordHasher(1).hash(pw));
        process.stdout.write(`new password for "${name}": ${pw}\n`);
        return 0;
      }
      case 'disable': await setUserDisabled(db, user.id, true); break;
      case 'enable': await setUserDisabled(db, user.id, false); break;
      case 'admin': await setUserRole(db, user.id, 'admin'); break;
      case 'unadmin': await setUserRole(db, user.id, 'user'); break;
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
