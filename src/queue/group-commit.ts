// Group commit: verdicts that arrive while a transaction is being written wait and go together in
// the next one, so many deliveries cost one fsync instead of one each (the same trick as a
// database's WAL writer).

export class GroupCommit<T, R> {
  #flush: (items: T[]) => Promise<R[]>;
  #pending: Array<{ item: T; resolve: (r: R) => void; reject: (e: unknown) => void }> = [];
  #writing = false;

  constructor(flush: (items: T[]) => Promise<R[]>) {
    this.#flush = flush;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#pending.push({ item, resolve, reject });
      // setImmediate lets every verdict produced in this turn of the event loop join the batch.
      if (!this.#writing) {
        this.#writing = true;
        setImmediate(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, 500);
      try {
        const results = await this.#flush(batch.map((p) => p.item));
        batch.forEach((p, i) => p.resolve(results[i]));
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    this.#writing = false;
  }
}
