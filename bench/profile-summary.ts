/**
 * Summarises a .cpuprofile: self time by package / source file and by function, and per-request microseconds when
 * given the request count: `npx tsx bench/profile-summary.ts file.cpuprofile [requests]`.
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
const [file, reqArg] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file!, 'utf8')) as {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
};
const requests = Number(reqArg ?? 0);
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const selfUs = new Map<number, number>();
p.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
const total = p.endTime - p.startTime;
const where = (n: Node): string => {
  const u = n.callFrame.url;
  if (!u) return n.callFrame.functionName ? `(native) ${n.callFrame.functionName}` : '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (m) return `npm:${m[1]}`;
  if (u.startsWith('node:')) return u;
  const s = /\/(src|bench|test)\/(.*)$/.exec(u);
  return s ? `${s[1]}/${s[2]}` : u;
};
const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
const byWhere = new Map<string, number>();
const byFn = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  add(byWhere, where(n), us);
  add(byFn, `${n.callFrame.functionName || '(anon)'} ${where(n)}:${n.callFrame.lineNumber + 1}`, us);
}
// Attribution by "first frame from our own code or a package" (who caused the work): attribute each sample to
// the nearest ancestor chain's top-most non-node: frame below the event loop.
const parent = new Map<number, number>();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
/** Where a sample's frames are, innermost first. */
const chainOf = (id: number): string[] => {
  const chain: string[] = [];
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) chain.push(where(byId.get(cur)!));
  return chain;
};
const byCause = new Map<string, number>();
for (const [id, us] of selfUs) {
  const chain = chainOf(id);
  // the innermost package/src frame that is not a node: builtin or native
  const k = chain.find((c) => c.startsWith('npm:') || c.startsWith('src/')) ?? chain[0]!;
  add(byCause, k, us);
}
const show = (title: string, m: Map<string, number>, n: number) => {
  process.stdout.write(`\n## ${title}\n`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) {
    const per = requests ? ` ${(v / requests).toFixed(1).padStart(7)} us/req` : '';
    process.stdout.write(`${((v / total) * 100).toFixed(1).padStart(5)}%${per}  ${k}\n`);
  }
};
process.stdout.write(
  `profile ${(total / 1e6).toFixed(1)} s${requests ? `, ${requests} requests, ${(total / requests).toFixed(0)} us/req wall` : ''}\n`,
);
// Components: the innermost frame that names one (a package, a src file, node's HTTP stack); GC and idle apart.
const GROUPS: Array<[RegExp, string]> = [
  [/^npm:(knex|tarn|sqlite3)$/, 'database: knex + node-sqlite3'],
  // node-sqlite3's native calls (N-API; the profiler names them `Backup`) sit under src/db/statements.ts.
  [/^src\/db\//, 'database: src/db and the node-sqlite3 calls it makes'],
  [/^npm:(express-session|cookie|cookie-signature|on-headers|uid-safe|random-bytes)$/, 'express-session'],
  [/^npm:(passport|passport-local|passport-strategy|pause|utils-merge)$/, 'passport'],
  [/^npm:helmet$/, 'helmet'],
  [/^npm:(csrf-sync)$/, 'csrf'],
  [/^npm:(nunjucks|a-sync-waterfall|asap)$/, 'nunjucks render'],
  [/^src\/web\/views|\.njk/, 'nunjucks render'],
  [
    /^npm:(express|router|parseurl|finalhandler|send|etag|fresh|mime-types|content-type|type-is|body-parser|qs|media-typer|depd|vary|encodeurl|escape-html|statuses|path-to-regexp|debug|ms|setprototypeof|merge-descriptors|methods|range-parser|proxy-addr|forwarded|ipaddr\.js|accepts|negotiator)$/,
    'express + router',
  ],
  [/^src\/web\//, 'src/web (app, routes, security)'],
  [/^src\/core\//, 'src/core'],
  [/^src\/glue|^src\/glue-client|^src\/protocol|^test\//, 'glue + worker (in process)'],
  [/^node:(_http|net|internal\/stream|internal\/http|stream|internal\/streams)/, 'node http + sockets'],
  [/^\(native\) (writev|writeUtf8String|writeBuffer|utf8Write|writeLatin1String)$/, 'node http + sockets'],
  [/^\(native\) \(garbage collector\)$/, 'GC'],
  [/^\(native\) \(idle\)$/, 'idle (waiting)'],
  [/^\(native\) \(program\)$/, '(program: native, unattributed)'],
  [/^\(native\) (VerifyTask|Statement|Database)/, 'database: knex + node-sqlite3'],
];
const group = (chain: string[]): string => {
  for (const c of chain) for (const [re, g] of GROUPS) if (re.test(c)) return g;
  return `other: ${chain[0]}`;
};
const byGroup = new Map<string, number>();
for (const [id, us] of selfUs) add(byGroup, group(chainOf(id)), us);
show('self time by component (innermost frame that names one)', byGroup, 25);
show('self time by where', byWhere, 30);
show('self time attributed to the innermost package or src file', byCause, 30);
show('self time by function', byFn, 40);
