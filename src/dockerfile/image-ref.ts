/**
 * Image names as the engine resolves them (docker/distribution `reference.ParseNormalizedNamed` + `TagNameOnly`):
 * `debian:bookworm`, `docker.io/library/debian:bookworm` and `index.docker.io/library/debian:bookworm` are one
 * image; a missing tag means `latest`. Nothing is lower-cased: a tag is case-sensitive, so `debian:BOOKWORM` is
 * another image (one the engine would pull), and upper case in a repository path is no reference at all.
 */

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;

/** The fully qualified form (`docker.io/library/debian:bookworm`), or undefined when the engine would not accept it. */
export function canonicalImage(ref: string): string | undefined {
  if (/^[a-f0-9]{64}$/.test(ref)) return undefined; // an image id, not a name
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) return undefined;
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) return undefined;
  }
  let domain = 'docker.io';
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0 && (/[.:]/.test(rest.slice(0, slash)) || rest.slice(0, slash) === 'localhost')) {
    domain = rest.slice(0, slash);
    path = rest.slice(slash + 1);
  }
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && !path.includes('/')) path = `library/${path}`;
  if (!DOMAIN.test(domain) || !path.split('/').every((c) => PATH_COMPONENT.test(c))) return undefined;
  if (`${domain}/${path}`.length > 255) return undefined;
  return `${domain}/${path}${tag !== undefined ? `:${tag}` : digest ? '' : ':latest'}${digest ? `@${digest}` : ''}`;
}

/** The short form people write (`debian:bookworm`), for messages. */
export function familiarImage(canonical: string): string {
  return canonical.replace(/^docker\.io\/(?:library\/)?/, '');
}
