import net from 'node:net';
import os from 'node:os';
import { parseDockerfile } from '../dockerfile/parse.js';
import { PROXY_ARG_NAMES } from '../dockerfile/policy.js';
import { mirrorUrls } from './base.js';

/**
 * The HTTP(S) proxy a Dockerfile's RUN steps use (config `sdk.buildProxy`). It reaches the build only as the engine's
 * predefined proxy build args (moby 20.10 builder/dockerfile/buildargs.go: HTTP_PROXY, HTTPS_PROXY, FTP_PROXY,
 * NO_PROXY and their lower-case forms; ALL_PROXY is not one there). Those are set in every RUN step without an ARG
 * and are left out of the image's history, its config and the layer cache's key, so nothing of them stays in the
 * image. A Dockerfile that declares one of them with ARG makes the engine record its value in the image's history
 * (the engine's layer cache, never the artifacts): the log says so.
 */

export interface ProxySettings {
  httpProxy?: string;
  httpsProxy?: string;
  noProxy: readonly string[];
}

export interface BuildProxy {
  /** The build args, both cases (curl and apt read only the lower-case ones, others the upper-case ones). */
  args: Record<string, string>;
  /** What the manifest, provenance and log say: scheme, host and port, never credentials. */
  summary: { httpProxy?: string; httpsProxy?: string; noProxy?: string[] };
  /** Credentials to mask in the build log (a RUN step can print its environment). */
  secrets: string[];
  /** The proxies' URLs: the filtered build network lets RUN steps reach them. */
  urls: string[];
}

/**
 * Every URL RUN steps must reach on the filtered build network, which lets them through even on a private address:
 * the mirrors, and the build proxies.
 */
export function buildNetworkUrls(s: Parameters<typeof mirrorUrls>[0] & { buildProxy: ProxySettings }): string[] {
  return [...mirrorUrls(s), ...[s.buildProxy.httpProxy, s.buildProxy.httpsProxy].filter((u): u is string => !!u)];
}

/** `http://host:port` of a proxy URL: what may be shown. */
export function proxyDisplay(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}`;
}

/** The parts of a proxy URL's user info that must not be shown, as written and percent-decoded. */
function credentials(url: string): string[] {
  const u = new URL(url);
  const out = new Set<string>();
  const add = (s: string) => {
    if (!s) return;
    out.add(s);
    try {
      out.add(decodeURIComponent(s));
    } catch {
      /* not valid percent-encoding: the raw form is masked */
    }
  };
  if (u.username || u.password) add(`${u.username}:${u.password}`);
  // A password, or a user name alone (a token): short strings would mask half the log, so only from 4 characters on.
  const secret = u.password || u.username;
  if (secret.length >= 4) add(secret);
  return [...out].filter(Boolean);
}

export function buildProxy(p: ProxySettings): BuildProxy | undefined {
  if (!p.httpProxy && !p.httpsProxy) return undefined;
  const args: Record<string, string> = {};
  const set = (name: string, value: string | undefined) => {
    if (value === undefined) return;
    args[name] = value;
    args[name.toLowerCase()] = value;
  };
  set('HTTP_PROXY', p.httpProxy);
  set('HTTPS_PROXY', p.httpsProxy);
  if (p.noProxy.length) set('NO_PROXY', p.noProxy.join(','));
  const urls = [p.httpProxy, p.httpsProxy].filter((u): u is string => !!u);
  return {
    args,
    summary: {
      ...(p.httpProxy ? { httpProxy: proxyDisplay(p.httpProxy) } : {}),
      ...(p.httpsProxy ? { httpsProxy: proxyDisplay(p.httpsProxy) } : {}),
      ...(p.noProxy.length ? { noProxy: [...p.noProxy] } : {}),
    },
    secrets: [...new Set(urls.flatMap(credentials))],
    urls,
  };
}

/**
 * Why RUN steps on the filtered network would not reach a proxy: it is on this host (loopback, or one of the host's
 * own addresses: the build network refuses everything addressed to the host). Undefined when it may be reachable.
 */
export function unreachableProxy(url: string, hostAddresses: readonly string[]): string | undefined {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || (net.isIPv4(host) && host.startsWith('127.')) || host === '::1') {
    return `the build proxy ${proxyDisplay(url)} is on loopback, which RUN steps (in a network namespace of their own) cannot reach`;
  }
  if (hostAddresses.includes(host)) {
    return `the build proxy ${proxyDisplay(url)} is an address of this host, and the filtered build network refuses RUN steps everything addressed to the host: run the proxy on another machine (its address is let through, a private one too) or set sdk.buildNetwork=host`;
  }
  return undefined;
}

/** The predefined proxy args a Dockerfile declares with ARG (the engine then records their values in the history). */
export function declaredProxyArgs(dockerfileText: string): string[] {
  const names = new Set<string>();
  for (const n of parseDockerfile(dockerfileText).nodes) {
    if (n.keyword !== 'arg') continue;
    for (const a of n.args) {
      const name = a.split('=')[0]!;
      if (PROXY_ARG_NAMES.includes(name)) names.add(name);
    }
  }
  return [...names];
}

/** This host's own addresses (where RUN steps on the filtered network cannot go). */
function hostAddresses(): string[] {
  return Object.values(os.networkInterfaces()).flatMap((l) => (l ?? []).map((a) => a.address));
}

/** What the build log says of the proxy before the build: where it is (never credentials), and what may go wrong. */
export function describeProxy(
  proxy: BuildProxy,
  dockerfileText: string,
  buildArgs: Readonly<Record<string, string>>,
  network: string,
): string[] {
  const s = proxy.summary;
  const lines = [
    `build proxy: RUN steps use ${[s.httpProxy && `http ${s.httpProxy}`, s.httpsProxy && `https ${s.httpsProxy}`, s.noProxy && `not for ${s.noProxy.join(',')}`].filter(Boolean).join(', ')} (sdk.buildProxy; build args only, never in the image)`,
  ];
  const own = Object.keys(proxy.args).filter((k) => k in buildArgs);
  if (own.length)
    lines.push(`build proxy: the build's own --build-arg ${own.join(', ')} used instead of sdk.buildProxy`);
  const declared = declaredProxyArgs(dockerfileText).filter((k) => k in proxy.args && !(k in buildArgs));
  if (declared.length)
    lines.push(
      `build proxy: the Dockerfile declares ARG ${declared.join(', ')}, so the engine records that value in the built image's history (its layer cache on this host; not in the artifacts)`,
    );
  if (network === 'filtered') {
    for (const u of proxy.urls) {
      const why = unreachableProxy(u, hostAddresses());
      if (why) lines.push(`build proxy: warning: ${why}`);
    }
  }
  return lines;
}
