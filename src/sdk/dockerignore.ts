/**
 * `.dockerignore` matching as the Docker CLI does it (the legacy builder leaves it to the client, and we are the
 * client): patterns are cleaned paths relative to the context root, `*` and `?` stay within one path component,
 * `**` spans any number of them, `!pattern` re-includes, the last matching pattern wins, and a pattern that matches
 * a directory excludes everything under it.
 */
export interface IgnoreRule {
  negate: boolean;
  re: RegExp;
}

export function parseDockerignore(text: string): IgnoreRule[] {
  const rules: IgnoreRule[] = [];
  for (let line of text.split(/\r?\n/)) {
    line = line.trim();
    if (!line || line.startsWith('#')) continue;
    let negate = false;
    if (line.startsWith('!')) {
      negate = true;
      line = line.slice(1).trim();
    }
    const clean = line
      .split('/')
      .filter((p) => p && p !== '.')
      .join('/');
    if (!clean) continue;
    rules.push({ negate, re: globToRegExp(clean) });
  }
  return rules;
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      if (glob[i + 2] === '/') {
        re += '(?:.*/)?';
        i += 2;
      } else {
        re += '.*';
        i += 1;
      }
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i);
      if (end > i) {
        re += glob.slice(i, end + 1).replace(/^\[!/, '[^');
        i = end;
      } else re += '\\[';
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** True when the path (components joined by `/`) is excluded. */
export function isIgnored(rules: IgnoreRule[], rel: string): boolean {
  if (!rules.length) return false;
  const parts = rel.split('/');
  let ignored = false;
  for (const r of rules) {
    let hit = false;
    for (let n = parts.length; n >= 1 && !hit; n--) hit = r.re.test(parts.slice(0, n).join('/'));
    if (hit) ignored = !r.negate;
  }
  return ignored;
}

/**
 * Whether a build context entry stays out of what the builder gets: ignored by the rules, except the
 * .dockerignore itself, which always goes along (as the Docker CLI sends it). One rule for the SDK, which applies
 * it to the context it receives, and `kiln client`, which applies it before uploading.
 */
export function leftOut(rules: IgnoreRule[], rel: string): boolean {
  return rel !== '.dockerignore' && isIgnored(rules, rel);
}

/** Whether some `!pattern` may bring back a path under an ignored directory (else the directory can be skipped). */
export const hasExceptions = (rules: IgnoreRule[]): boolean => rules.some((r) => r.negate);
