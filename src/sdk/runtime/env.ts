/**
 * The environment `docker run` gives the container's process: PATH (Docker's default) and HOSTNAME, replaced or
 * extended by the image's ENV in order (moby's ReplaceOrAppendEnvValues; an entry without `=` unsets), each name
 * once with its last value (runc sets them one by one), then HOME from USER when the result has no non-empty HOME
 * (runc). Nothing else: no TERM (only with -t), no USER/LOGNAME/SHELL, nothing of the init system's own.
 */

/** What a container gets when its image sets no PATH (Docker's default). */
export const DOCKER_DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** One variable; `value: null` is HOSTNAME, set when the program starts to the machine's hostname. */
export interface EnvVar {
  name: string;
  value: string | null;
}

/** Why `docker run` refuses the environment (runc's words). */
export class EnvError extends Error {}

export function containerEnv(imageEnv: readonly string[], home: string): EnvVar[] {
  const defaults: (EnvVar | undefined)[] = [
    { name: 'PATH', value: DOCKER_DEFAULT_PATH },
    { name: 'HOSTNAME', value: null },
  ];
  const appended: string[] = [];
  for (const e of imageEnv) {
    const eq = e.indexOf('=');
    const name = eq < 0 ? e : e.slice(0, eq);
    if (e.includes('\0'))
      throw new EnvError(`invalid environment variable ${JSON.stringify(name)}: contains a nul byte`);
    const i = defaults.findIndex((d) => d?.name === name);
    if (eq < 0) {
      if (i >= 0) defaults[i] = undefined;
    } else if (i >= 0) defaults[i] = { name, value: e.slice(eq + 1) };
    else appended.push(e);
  }
  const vars = new Map<string, string | null>();
  for (const d of defaults) if (d) vars.set(d.name, d.value);
  for (const e of appended) {
    const eq = e.indexOf('=');
    const name = e.slice(0, eq);
    if (name === '') throw new EnvError(`invalid environment variable ${JSON.stringify(e)}: name cannot be empty`);
    vars.set(name, e.slice(eq + 1));
  }
  if (!vars.get('HOME')) vars.set('HOME', home);
  return [...vars].map(([name, value]) => ({ name, value }));
}

/** `NAME=value` lines for people (the manifest), HOSTNAME shown as what it becomes. */
export function describeEnv(env: readonly EnvVar[]): string[] {
  return env.map((v) => `${v.name}=${v.value ?? "<the machine's hostname>"}`);
}
