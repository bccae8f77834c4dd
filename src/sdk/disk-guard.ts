import fs from 'node:fs';

/**
 * Watches how much free space a filesystem loses while a build runs, and calls `onExceed` once it has lost more
 * than `limitBytes`. The engine has no per-build disk quota on overlay2 over ext4 (that needs xfs project quotas),
 * so a `RUN dd if=/dev/zero of=/big ...` would otherwise fill the build host before the image size limit is ever
 * checked at export time. Concurrent builds on the same engine share the measurement: it is a guard for the host,
 * not an accounting of one build.
 */
export function watchDiskGrowth(
  dir: string,
  limitBytes: number,
  onExceed: (lostBytes: number) => void,
  intervalMs = 500,
): () => void {
  const free = () => {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  };
  const start = free();
  let fired = false;
  const timer = setInterval(() => {
    if (fired) return;
    let lost: number;
    try {
      lost = start - free();
    } catch {
      return;
    }
    if (lost > limitBytes) {
      fired = true;
      onExceed(lost);
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
