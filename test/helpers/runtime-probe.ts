import { createHash } from 'node:crypto';

/**
 * A probe program for comparing how a process is started (under `docker run`, kiln-exec on this host, or a booted
 * image's service): its argv and environment exactly as the kernel gave them (hex of /proc/self/cmdline and
 * environ), its directory, ids, groups, umask, signal dispositions, whether it leads its own session, and where
 * stdin points. /bin/sh (dash) and coreutils only: it runs in any Debian image. The case name comes from $KILN_CASE.
 *
 * A booted image's serial console is a lossy channel: a line of a few hundred bytes may lose a run of bytes on its
 * way out of QEMU when much is printed at once, and a getty starting flushes what was not sent yet. So the report
 * goes out in short numbered lines, each with a checksum, three times over 10-20 s (once with $KILN_PROBE_ONCE),
 * and parseProbes puts a case together from intact lines only.
 */
export const PROBE_SCRIPT = `#!/bin/sh
# Its tools by absolute path: the PATH under test may not reach them.
hex() { /usr/bin/od -An -tx1 -v | /usr/bin/tr -d ' \\n'; }
st=
# Read by the shell itself (no child running), so the signal mask is the one the program was started with.
while IFS= read -r l; do
  case $l in Uid:*|Gid:*|Groups:*|Umask:*|SigIgn:*|SigBlk:*) st="$st \${l%%:*}=$(echo \${l#*:} | /usr/bin/tr ' ' ',')" ;; esac
done </proc/$$/status
read -r pid comm state ppid pgrp sid rest </proc/$$/stat
[ "$sid" = "$$" ] && leader=yes || leader=no
case=\${KILN_CASE:-none}
body=$(printf 'cmdline=%s environ=%s cwd=%s%s leader=%s stdin=%s' "$(hex </proc/$$/cmdline)" "$(hex </proc/$$/environ)" "$(/usr/bin/readlink -n /proc/$$/cwd | hex)" "$st" "$leader" "$(/usr/bin/readlink /proc/$$/fd/0)")
n=$(printf '%s\\n' "$body" | /usr/bin/fold -w 96 | /usr/bin/wc -l)
report() {
  i=0
  printf '%s\\n' "$body" | /usr/bin/fold -w 96 | while IFS= read -r chunk; do
    i=$((i + 1))
    printf 'KILN-PROBE %s %s/%s %s %s\\n' "$case" "$i" "$n" "$chunk" "$(printf '%s' "$case $i/$n $chunk" | /usr/bin/md5sum | /usr/bin/cut -c1-8)"
  done
}
report
[ -z "$KILN_PROBE_ONCE" ] || exit 0
/usr/bin/sleep $((5 + $$ % 7))
report
/usr/bin/sleep $((5 + $$ % 5))
report
`;

export interface ProbeResult {
  argv: string[];
  env: string[];
  cwd: string;
  uid: string;
  gid: string;
  groups: string;
  umask: string;
  sigIgn: string;
  sigBlk: string;
  leader: string;
  stdin: string;
}

const strings = (hex: string) => {
  const parts = Buffer.from(hex, 'hex').toString('utf8').split('\0');
  parts.pop();
  return parts;
};

/** Every case whose report came through whole (from any intact copy of each numbered line), by case name. */
export function parseProbes(text: string): Map<string, ProbeResult> {
  const parts = new Map<string, { n: number; chunks: Map<number, string> }>();
  for (const m of text.matchAll(/KILN-PROBE (\S+) (\d+)\/(\d+) (.*) ([0-9a-f]{8})\r?$/gm)) {
    const [, id, i, n, chunk, sum] = m as unknown as [string, string, string, string, string, string];
    if (createHash('md5').update(`${id} ${i}/${n} ${chunk}`).digest('hex').slice(0, 8) !== sum) continue;
    const p = parts.get(id) ?? { n: Number(n), chunks: new Map() };
    parts.set(id, p);
    p.chunks.set(Number(i), chunk);
  }
  const out = new Map<string, ProbeResult>();
  for (const [id, p] of parts) {
    if (p.chunks.size !== p.n) continue;
    const body = Array.from({ length: p.n }, (_, k) => p.chunks.get(k + 1)).join('');
    const f = Object.fromEntries([...body.matchAll(/(\w+)=(\S*)/g)].map((x) => [x[1]!, x[2]!]));
    out.set(id, {
      argv: strings(f.cmdline ?? ''),
      env: strings(f.environ ?? ''),
      cwd: Buffer.from(f.cwd ?? '', 'hex').toString('utf8'),
      uid: f.Uid ?? '',
      gid: f.Gid ?? '',
      groups: f.Groups ?? '',
      umask: f.Umask ?? '',
      sigIgn: f.SigIgn ?? '',
      sigBlk: f.SigBlk ?? '',
      leader: f.leader ?? '',
      stdin: f.stdin ?? '',
    });
  }
  return out;
}
