import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../../src/glue/backends/types.js';

/**
 * A stand-in for `kiln sdk build` (the real SDK is tested in test/sdk): a shell script taking the same flags. What
 * it does is chosen by a `# fake: MODE` line in the Dockerfile, so one script serves every test:
 *   (none)        prints progress, writes image.raw + result.json, exits 0
 *   fail          writes result.json with an error message, exits 1
 *   sleep N       prints progress, then sleeps N seconds before succeeding (cancel/restart/queue tests)
 *   symlink       also makes manifest.json a symlink to /etc/passwd (must never be served)
 *   noise N       prints N KiB of log lines (log cap and offsets)
 * It records its argv in <out>/argv.txt (not an artifact name, so never served).
 */
export function writeFakeSdk(dir: string): string[] {
  const file = path.join(dir, 'fake-sdk.sh');
  writeFileSync(file, `#!/bin/sh
set -e
prev=
for a in "$@"; do
  [ "$prev" = --dockerfile ] && df=$a
  [ "$prev" = --out ] && out=$a
  prev=$a
done
for a in "$@"; do printf '%s\\n' "$a"; done > "$out/argv.txt"
mode=$(sed -n 's/^# fake: //p' "$df" | head -n 1)
echo '##kiln {"stage":"build","percent":10,"message":"building the Dockerfile"}'
case "$mode" in
  sleep*) echo "sleeping"; sleep \${mode#sleep } ;;
  noise*) n=\${mode#noise }; i=0; while [ $i -lt $n ]; do head -c 1023 /dev/zero | tr '\\0' 'x'; echo; i=$((i+1)); done ;;
esac
if [ "$mode" = fail ]; then
  printf '{"ok":false,"error":{"code":"build_failed","message":"RUN step 2 failed: exit 100"}}' > "$out/result.json"
  echo "build failed" >&2
  exit 1
fi
printf 'RAW-IMAGE-BYTES' > "$out/image.raw"
printf '{"ok":true,"artifacts":["image.raw"]}' > "$out/result.json"
if [ "$mode" = symlink ]; then ln -s /etc/passwd "$out/manifest.json"; fi
echo '##kiln {"stage":"done","percent":100}'
`);
  chmodSync(file, 0o755);
  return [file];
}

/** A job spec whose Dockerfile selects the fake SDK's behaviour. */
export function fakeSpec(mode?: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    owner: 'alice', name: 'demo',
    dockerfile: `FROM debian:bookworm\n${mode ? `# fake: ${mode}\n` : ''}RUN true\n`,
    ...extra,
  };
}

/** Wraps a real backend and records every method called on it (to prove a rejected request reached nothing). */
export function recording(backend: Backend): { backend: Backend; calls: string[] } {
  const calls: string[] = [];
  const proxy = new Proxy(backend, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || prop === 'start' || prop === 'close') return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { backend: proxy, calls };
}
