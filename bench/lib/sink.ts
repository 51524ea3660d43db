// Parent side of bench/lib/sink-child.ts: forks the sink, collects when each message arrived.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { SinkChildOptions, SinkStats } from './sink-child.ts';
import { now, sleep } from './util.ts';

const entry = fileURLToPath(new URL('./sink-child.ts', import.meta.url));

export interface BenchSink {
  port: number;
  pid: number;
  /** X-Bench-Id → epoch ms at which the sink answered 250 to the final dot. */
  readonly deliveredAt: Map<string, number>;
  /** Deliveries without an X-Bench-Id header, or whose id had already arrived. */
  readonly unexpected: number;
  /** Resolves when `ids` have all arrived, or at `deadline` (epoch ms): true when all arrived. */
  waitFor(ids: Iterable<string>, deadline: number): Promise<boolean>;
  stats(): Promise<SinkStats>;
  close(): Promise<void>;
}

export async function forkSink(options: SinkChildOptions): Promise<BenchSink> {
  const child: ChildProcess = fork(entry, [JSON.stringify(options)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const deliveredAt = new Map<string, number>();
  let unexpected = 0;
  let statsWaiter: ((s: SinkStats) => void) | null = null;
  const [ready] = (await Promise.race([
    once(child, 'message'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`bench sink exited with ${code} before it was ready`);
    }),
  ])) as [{ type: string; port: number }];
  if (ready.type !== 'ready') throw new Error(`bench sink: unexpected first message ${JSON.stringify(ready)}`);
  child.on('message', (message: { type: string; items?: Array<[string, number]> }) => {
    if (message.type === 'delivered') {
      for (const [id, t] of message.items!) {
        if (!id || deliveredAt.has(id)) unexpected++;
        else deliveredAt.set(id, t);
      }
    } else if (message.type === 'stats') {
      statsWaiter?.(message as unknown as SinkStats);
      statsWaiter = null;
    }
  });
  const exited = once(child, 'exit');
  return {
    port: ready.port,
    pid: child.pid!,
    deliveredAt,
    get unexpected() {
      return unexpected;
    },
    async waitFor(ids, deadline) {
      const wanted = [...ids];
      let i = 0;
      for (;;) {
        while (i < wanted.length && deliveredAt.has(wanted[i])) i++;
        if (i >= wanted.length) return true;
        if (now() >= deadline || child.exitCode !== null) return false;
        await sleep(20);
      }
    },
    stats() {
      return new Promise<SinkStats>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('bench sink did not answer for its stats')), 10_000);
        statsWaiter = (s) => {
          clearTimeout(timer);
          resolve(s);
        };
        child.send({ type: 'stats' });
      });
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ type: 'close' });
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
