/**
 * USER as `docker run` resolves it, in the image's own /etc/passwd and /etc/group. Docker (moby) calls runc's
 * libcontainer/user.GetExecUser with the USER string, then runs the process with that uid and gid and the
 * supplementary groups [gid, ...groups that list the user]; runc then sets HOME, when the environment has none, from
 * the first passwd entry with that uid (else "/"). This is a port of those rules, checked against Docker 20.10 /
 * runc 1.1 by test/sdk/runtime-diff.test.ts; the odd corners (a numeric USER missing from passwd runs with gid 0 and
 * HOME=/, `user:group` drops the supplementary groups, a second name for a uid gets the first name's HOME) are theirs.
 */

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}
export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface Identity {
  /** The USER string as the image has it ('' = root). */
  spec: string;
  uid: number;
  gid: number;
  /** Supplementary groups, sorted (the kernel keeps them sorted), always including gid. */
  groups: number[];
  /** HOME unless the image's ENV sets a non-empty one. */
  home: string;
}

/** Why `docker run` refuses the USER (its own words). */
export class UserLookupError extends Error {}

const MAX_ID = 2 ** 31 - 1;

/** Go's strconv.Atoi: optional sign and decimal digits, else undefined. */
function atoi(s: string): number | undefined {
  if (!/^[+-]?\d+$/.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** runc's parseLine: trimmed non-empty lines split on ':'; numbers that do not parse count as 0, as in runc. */
function records(text: string): string[][] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => l.split(':'));
}

export function parsePasswd(text: string): PasswdEntry[] {
  return records(text).map((f) => ({
    name: f[0] ?? '',
    uid: atoi(f[2] ?? '') ?? 0,
    gid: atoi(f[3] ?? '') ?? 0,
    home: f[5] ?? '',
  }));
}

export function parseGroup(text: string): GroupEntry[] {
  return records(text).map((f) => ({
    name: f[0] ?? '',
    gid: atoi(f[2] ?? '') ?? 0,
    members: f[3] ? f[3].split(',') : [],
  }));
}

function inRange(id: number, what: string): number {
  if (id < 0 || id > MAX_ID)
    throw new UserLookupError(`${what} ${id} is out of range: uids and gids must be in range 0-${MAX_ID}`);
  return id;
}

/** Resolves USER against the image's passwd and group entries (a missing file is an empty list, as in runc). */
export function resolveUser(spec: string, passwd: PasswdEntry[], group: GroupEntry[]): Identity {
  const [userArg = '', groupArg = ''] = spec.split(':');
  const uidArg = atoi(userArg);
  const gidArg = atoi(groupArg);
  // An empty user means the current one (root); a number is always a uid, never a name.
  const user = passwd.find((u) =>
    userArg === '' ? u.uid === 0 : uidArg !== undefined ? u.uid === uidArg : u.name === userArg,
  );
  let uid = 0;
  let gid = 0;
  if (user) {
    uid = user.uid;
    gid = user.gid;
  } else if (userArg !== '') {
    if (uidArg === undefined)
      throw new UserLookupError(`unable to find user ${userArg}: no matching entries in passwd file`);
    uid = inRange(uidArg, 'uid');
  }
  let supplementary: number[] = [];
  if (groupArg !== '') {
    const g = group.find((x) => (gidArg !== undefined ? x.gid === gidArg : x.name === groupArg));
    if (g) gid = g.gid;
    else if (gidArg === undefined)
      throw new UserLookupError(`unable to find group ${groupArg}: no matching entries in group file`);
    else gid = inRange(gidArg, 'gid');
  } else if (user?.name) {
    // Only the implicit form gets the groups that list the user by name.
    supplementary = group.filter((x) => x.members.includes(user.name)).map((x) => x.gid);
  }
  const home = passwd.find((u) => u.uid === uid)?.home ?? '/';
  return { spec, uid, gid, groups: [...new Set([gid, ...supplementary])].sort((a, b) => a - b), home };
}
