// Counting semaphores keyed by destination, so one slow or huge destination cannot take every
// delivery slot and starve the others.

export class KeyedLimiter {
  #limit: number;
  #active = new Map<string, number>();
  #waiting = new Map<string, Array<() => void>>();

  constructor(limit: number) {
    this.#limit = limit;
  }

  active(key: string): number {
    return this.#active.get(key) ?? 0;
  }

  /** Resolves with a release function once a slot for `key` is free; rejects if `signal` aborts first. */
  acquire(key: string, signal?: AbortSignal): Promise<() => void> {
    const grant = (): (() => void) => {
      this.#active.set(key, this.active(key) + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const queue = this.#waiting.get(key);
        const next = queue?.shift();
        if (queue && queue.length === 0) this.#waiting.delete(key);
        if (next) next();
        else if (this.active(key) <= 1) this.#active.delete(key);
        else this.#active.set(key, this.active(key) - 1);
      };
    };
    if (this.active(key) < this.#limit) return Promise.resolve(grant());
    return new Promise((resolve, reject) => {
      const queue = this.#waiting.get(key) ?? [];
      this.#waiting.set(key, queue);
      // A waiter that is handed a slot inherits the releaser's count: no decrement, no increment.
      const onSlot = () => {
        signal?.removeEventListener('abort', onAbort);
        this.#active.set(key, this.active(key) - 1);
        resolve(grant());
      };
      const onAbort = () => {
        const i = queue.indexOf(onSlot);
        if (i >= 0) queue.splice(i, 1);
        reject(signal!.reason);
      };
      queue.push(onSlot);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
