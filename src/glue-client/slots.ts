/**
 * A counting semaphore, first come first served. `acquire(waitMs)` gives up after `waitMs` (resolving false);
 * without it, it waits as long as it takes.
 */
export function slots(max: number) {
  let active = 0;
  const waiting: Array<() => void> = [];
  return {
    async acquire(waitMs?: number): Promise<boolean> {
      if (active < max) {
        active++;
        return true;
      }
      return new Promise<boolean>((resolve) => {
        let timer: NodeJS.Timeout | undefined;
        const grant = () => {
          clearTimeout(timer);
          active++;
          resolve(true);
        };
        waiting.push(grant);
        if (waitMs !== undefined) {
          timer = setTimeout(() => {
            const i = waiting.indexOf(grant);
            if (i >= 0) waiting.splice(i, 1);
            resolve(false);
          }, waitMs);
        }
      });
    },
    release(): void {
      active--;
      if (active < max) waiting.shift()?.();
    },
  };
}
