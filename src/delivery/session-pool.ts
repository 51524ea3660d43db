// Idle SMTP sessions kept open for reuse, so many messages to one destination share one TCP
// connection and one TLS handshake (RSET between transactions). Sessions are keyed by next hop,
// address, port and TLS level: a session opened under a weaker policy is never reused for a
// stronger one.
import type { SmtpSession } from './smtp-session.ts';

interface Idle {
  session: SmtpSession;
  timer: NodeJS.Timeout;
}

export class SessionPool {
  #idle = new Map<string, Idle[]>();
  #idleTimeoutMs: number;
  #maxMessages: number;
  /** Sessions opened and reused, for metrics and the benchmark. */
  readonly stats = { reused: 0, retired: 0 };

  constructor(options: { idleTimeoutMs: number; maxMessagesPerSession: number }) {
    this.#idleTimeoutMs = options.idleTimeoutMs;
    this.#maxMessages = options.maxMessagesPerSession;
  }

  get idleCount(): number {
    let n = 0;
    for (const list of this.#idle.values()) n += list.length;
    return n;
  }

  take(key: string): SmtpSession | null {
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const idle = list.pop()!;
      clearTimeout(idle.timer);
      if (list.length === 0) this.#idle.delete(key);
      if (idle.session.usable) {
        this.stats.reused++;
        return idle.session;
      }
      idle.session.destroy();
    }
    return null;
  }

  /**
   * Returns a session after a transaction: reset for the next one, or closed when spent. Resolves
   * once the session is back in the pool, so a caller that holds a per-destination slot releases
   * it only when the next delivery can find the connection.
   */
  async give(key: string, session: SmtpSession): Promise<void> {
    if (!session.usable || session.messagesSent >= this.#maxMessages) {
      this.stats.retired++;
      await session.close().catch(() => session.destroy());
      return;
    }
    await session.reset().then(
      () => {
        const list = this.#idle.get(key) ?? [];
        this.#idle.set(key, list);
        const idle: Idle = {
          session,
          timer: setTimeout(() => {
            const i = list.indexOf(idle);
            if (i >= 0) list.splice(i, 1);
            if (list.length === 0 && this.#idle.get(key) === list) this.#idle.delete(key);
            void session.close().catch(() => session.destroy());
          }, this.#idleTimeoutMs),
        };
        idle.timer.unref();
        list.push(idle);
      },
      () => session.destroy(),
    );
  }

  async closeAll(): Promise<void> {
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    await Promise.all(
      all.map(async ({ session, timer }) => {
        clearTimeout(timer);
        await session.close().catch(() => session.destroy());
      }),
    );
  }
}
