/**
 * Starts work while there is room: `claim()` the next item and `launch()` it (without waiting for it) until
 * `room()` says no more or nothing is left. A `kick()` during a pass folds into one more pass, so an item that
 * arrives mid-pass is never missed and passes never overlap. `idle` resolves when the current pass is over (a
 * claimed item is not launched yet until then: wait for it before stopping).
 */
export function pump<T>(o: {
  claim: () => Promise<T | undefined>;
  launch: (item: T) => void;
  room: () => boolean;
  onError: (e: unknown) => void;
}): { kick(): void; readonly idle: Promise<void> } {
  let passing = false;
  let again = false;
  let idle: Promise<void> = Promise.resolve();
  return {
    kick() {
      if (passing) {
        again = true;
        return;
      }
      passing = true;
      idle = (async () => {
        do {
          again = false;
          while (o.room()) {
            const item = await o.claim();
            if (item === undefined) break;
            o.launch(item);
          }
        } while (again && o.room());
      })()
        .catch(o.onError)
        .finally(() => {
          passing = false;
        });
    },
    get idle() {
      return idle;
    },
  };
}
