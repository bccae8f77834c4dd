/**
 * A probe program for comparing how a process is started (under `docker run`, kiln-exec on this host, or a booted
 * image's service): one console line with its argv and environment exactly as the kernel gave them (hex of
 * /proc/self/cmdline and environ), its directory, ids, groups, umask, signal dispositions, whether it leads its own
 * session, and where stdin points. /bin/sh only (dash), no other tool than od, tr and readlink: it runs in any
 * Debian image. The case name comes from $KILN_CASE.
 */
export const PROBE_SCRIPT = `#!/bin/sh
hex() { od -An -tx1 -v | tr -d ' \\n'; }
st=
# Read by the shell itself (no child running), so the signal mask is the one the program was started with.
while IFS= read -r l; do
  case $l in Uid:*|Gid:*|Groups:*|Umask:*|SigIgn:*|SigBlk:*) st="$st \${l%%:*}=$(echo \${l#*:} | tr ' ' ',')" ;; esac
done </proc/$$/status
read -r pid comm state ppid pgrp sid rest </proc/$$/stat
[ "$sid" = "$$" ] && leader=yes || leader=no
printf 'KILN-PROBE %s cmdline=%s environ=%s cwd=%s%s leader=%s stdin=%s KILN-PROBE-END\\n' "\${KILN_CASE:-none}" "$(hex </proc/$$/cmdline)" "$(hex </proc/$$/environ)" "$(readlink -n /proc/$$/cwd | hex)" "$st" "$leader" "$(readlink /proc/$$/fd/0)"
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

/** Every probe line in a text (a console log may prefix each line), by case name; the last line of a case wins. */
export function parseProbes(text: string): Map<string, ProbeResult> {
  const out = new Map<string, ProbeResult>();
  for (const m of text.matchAll(/KILN-PROBE (\S+) (.*?) KILN-PROBE-END/g)) {
    const f = Object.fromEntries([...m[2]!.matchAll(/(\w+)=(\S*)/g)].map((x) => [x[1]!, x[2]!]));
    out.set(m[1]!, {
      argv: strings(f.cmdline ?? ''),
      env: strings(f.environ ?? ''),
      cwd: Buffer.from(f.cwd ?? '', 'hex').toString('utf8'),
      uid: f.Uid ?? '', gid: f.Gid ?? '', groups: f.Groups ?? '', umask: f.Umask ?? '', sigIgn: f.SigIgn ?? '', sigBlk: f.SigBlk ?? '',
      leader: f.leader ?? '', stdin: f.stdin ?? '',
    });
  }
  return out;
}
