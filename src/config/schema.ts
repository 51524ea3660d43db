// The one validated configuration object. Everything configurable is declared here with its
// default; loading (defaults → file → LACRE_* env) lives in load.ts. May import: nothing of Lacre's.
import { z } from 'zod';
import { parseDuration } from './duration.ts';

const duration = (what: string) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === null) {
      ctx.addIssue({ code: 'custom', message: `${what}: expected a duration such as 300, 30s, 5m, 2h or 5d` });
      return z.NEVER;
    }
    return ms;
  });

const port = z.coerce.number({ error: 'expected a TCP port number (0-65535)' }).int().min(0).max(65535);

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const configSchema = z
  .object({
    dataDir: z.string().min(1).default('./data'),
    masterKey: z
      .string()
      .refine((v) => Buffer.from(v, 'base64').length === 32 && /^[A-Za-z0-9+/]+={0,2}$/.test(v), {
        message: 'expected 32 random bytes in base64 (44 characters), e.g. from `openssl rand -base64 32`',
      })
      .optional(),
    retiredMasterKeys: z
      .array(
        z.string().refine((v) => Buffer.from(v, 'base64').length === 32, {
          message: 'each retired key must be 32 bytes in base64',
        }),
      )
      .default([]),
    http: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(8080),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 8080 }),
    log: z
      .object({ level: z.enum(LOG_LEVELS).default('info') })
      .strict()
      .default({ level: 'info' }),
    queue: z
      .object({
        // Postfix: minimal_backoff_time 300s, maximal_backoff_time 4000s, maximal_queue_lifetime 5d.
        minBackoff: duration('queue.minBackoff').default(300_000),
        maxBackoff: duration('queue.maxBackoff').default(4_000_000),
        maxAge: duration('queue.maxAge').default(5 * 86_400_000),
        lease: duration('queue.lease').default(300_000),
        pollInterval: duration('queue.pollInterval').default(1_000),
        concurrency: z.coerce.number().int().min(1).max(1000).default(20),
        shutdownGrace: duration('queue.shutdownGrace').default(10_000),
      })
      .strict()
      .default({
        minBackoff: 300_000,
        maxBackoff: 4_000_000,
        maxAge: 5 * 86_400_000,
        lease: 300_000,
        pollInterval: 1_000,
        concurrency: 20,
        shutdownGrace: 10_000,
      })
      .refine((q) => q.minBackoff <= q.maxBackoff, {
        message: 'queue.minBackoff must not exceed queue.maxBackoff',
      })
      .refine((q) => q.lease >= 1_000, { message: 'queue.lease must be at least 1s' }),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
