// The one validated configuration object. Everything configurable is declared here with its
// default; loading (defaults → file → LACRE_* env) lives in load.ts.
import { hostname } from 'node:os';
import { z } from 'zod';
import { parseDuration } from './duration.ts';
import { STATIC_TLS_LEVELS, parseTlsPolicies } from '../tls-policy/levels.ts';
import { parseRoutes } from '../delivery/destination.ts';
import { parseDnsServers } from '../dns/resolver.ts';
import { DEFAULT_TIMEOUTS as SESSION_TIMEOUTS } from '../delivery/timeouts.ts';

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

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** A size in bytes: a number, or text such as `25MB` (K, M, G are powers of 1024). */
const byteSize = (what: string, min: number, max: number) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(String(value));
    const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
    const bytes = match && unit !== undefined ? Number(match[1]) * unit : NaN;
    if (!Number.isSafeInteger(bytes) || bytes < min || bytes > max) {
      ctx.addIssue({ code: 'custom', message: `${what}: expected a size from ${min} bytes to ${max / 1024 ** 2} MB, such as 26214400, 500KB or 25MB` });
      return z.NEVER;
    }
    return bytes;
  });

/** A setting given as "a=b,c=d" text (env) or as an object (file), checked by `parse`. */
function keyValueSetting<T>(what: string, parse: (text: string) => Map<string, T>) {
  return z
    .union([z.string(), z.record(z.string(), z.string())])
    .transform((value, ctx) => {
      const text = typeof value === 'string' ? value : Object.entries(value).map(([k, v]) => `${k}=${v}`).join(',');
      try {
        return Object.fromEntries(parseText(text));
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: `${what}: ${(err as Error).message}` });
        return z.NEVER;
      }
    });
  function parseText(text: string): Map<string, T> {
    return text.trim() === '' ? new Map() : parse(text);
  }
}

// The configurable subset of the SMTP client's timeouts (RFC 5321 §4.5.3.2 defaults live there).
const DEFAULT_TIMEOUTS = {
  connect: SESSION_TIMEOUTS.connect,
  greeting: SESSION_TIMEOUTS.greeting,
  command: SESSION_TIMEOUTS.command,
  dataInit: SESSION_TIMEOUTS.dataInit,
  dataBlock: SESSION_TIMEOUTS.dataBlock,
  dataDone: SESSION_TIMEOUTS.dataDone,
};

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

/** A yes/no setting as JSON boolean or env text: true/false, 1/0, yes/no, on/off in any case. */
export const booleanFlag = () =>
  z.union([z.boolean(), z.string()]).transform((v, ctx) => {
    if (typeof v === 'boolean') return v;
    const word = v.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    ctx.addIssue({ code: 'custom', message: 'expected true or false (also 1/0, yes/no, on/off, in any case)' });
    return z.NEVER;
  });

export const configSchema = z
  .object({
    dataDir: z.string().min(1).default('./data'),
    /** Our name in EHLO, Message-IDs and DSNs. */
    hostname: z
      .string()
      .regex(/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/, 'expected a host name such as mta.example.com')
      .default(hostname()),
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
        /** PEM certificate chain and key: both set switch the API to HTTPS (TLS 1.2 or later). */
        tlsCert: z.string().min(1).optional(),
        tlsKey: z.string().min(1).optional(),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 8080 })
      .refine((h) => (h.tlsCert === undefined) === (h.tlsKey === undefined), {
        message: 'http.tlsCert and http.tlsKey go together (LACRE_HTTP_TLS_CERT, LACRE_HTTP_TLS_KEY): set both for HTTPS, or neither for plain HTTP on loopback',
      }),
    dns: z
      .object({
        servers: z
          .union([z.string(), z.array(z.string())])
          .transform((value, ctx) => {
            try {
              return parseDnsServers(Array.isArray(value) ? value.join(',') : value);
            } catch (err) {
              ctx.addIssue({ code: 'custom', message: (err as Error).message });
              return z.NEVER;
            }
          })
          .default([]),
        timeout: duration('dns.timeout').default(5_000),
        /**
         * Believe the resolvers' AD bit (DNSSEC validated), which DANE needs. Only for a validating
         * resolver on a trusted path (loopback), as Postfix requires (RFC 7672 §1.3, RFC 6698 §4).
         */
        trustAd: booleanFlag().default(false),
      })
      .strict()
      .default({ servers: [], timeout: 5_000, trustAd: false }),
    tls: z
      .object({
        caFile: z.string().min(1).optional(),
        defaultPolicy: z.enum(STATIC_TLS_LEVELS).default('may'),
        policies: keyValueSetting('tls.policies', parseTlsPolicies).default({}),
        /** RFC 8689 §5: honour a message's `TLS-Required: No` by delivering despite policy failures. Off by default. */
        allowTlsRequiredNo: booleanFlag().default(false),
        mtaSts: z
          .object({
            /** Port of the policy host (RFC 8461 §3.3 fixes 443; other values are for test rigs). */
            port: port.default(443),
            /** Whole fetch, connect to last byte (RFC 8461 §3.3 suggests a minute or so). */
            fetchTimeout: duration('tls.mtaSts.fetchTimeout').default(60_000),
            /** How often cached policies close to expiry are refreshed (RFC 8461 §5.1). */
            refreshInterval: duration('tls.mtaSts.refreshInterval').default(3_600_000),
          })
          .strict()
          .default({ port: 443, fetchTimeout: 60_000, refreshInterval: 3_600_000 }),
      })
      .strict()
      .default({ defaultPolicy: 'may', policies: {}, allowTlsRequiredNo: false, mtaSts: { port: 443, fetchTimeout: 60_000, refreshInterval: 3_600_000 } }),
    tlsReporting: z
      .object({
        /**
         * Count TLS sessions per recipient domain (RFC 8460 §4 result types, one row per domain
         * and day): what `lacre tlsrpt show` and TLS coverage read. On by default; no report is
         * sent unless `enabled`.
         */
        count: booleanFlag().default(true),
        /**
         * Send the daily RFC 8460 reports to domains that ask for them. `from` must then be an
         * address under a verified sender domain.
         */
        enabled: booleanFlag().default(false),
        /** RFC 8460 §4.4 organization-name; the host name when unset. */
        organizationName: z.string().min(1).max(200).optional(),
        /** The report mails' From and envelope sender. */
        from: z.email({ error: 'expected an email address under a verified sender domain' }).optional(),
        /** RFC 8460 §4.4 contact-info; `mailto:<from>` when unset. */
        contact: z.string().min(1).max(320).optional(),
        /** Whole POST to an https rua. */
        httpsTimeout: duration('tlsReporting.httpsTimeout').default(30_000),
      })
      .strict()
      .refine((t) => !t.enabled || t.from !== undefined, {
        message: 'tlsReporting.from (LACRE_TLSRPT_FROM) is required when TLS reporting is enabled: an address under a verified sender domain',
      })
      .refine((t) => !t.enabled || t.count, {
        message: 'tlsReporting.enabled (LACRE_TLSRPT_ENABLED) sends reports built from the session counts: leave tlsReporting.count (LACRE_TLSRPT_COUNT) on',
      })
      .default({ count: true, enabled: false, httpsTimeout: 30_000 }),
    delivery: z
      .object({
        routes: keyValueSetting('delivery.routes', parseRoutes).default({}),
        smtpPort: port.default(25),
        // Postfix default_destination_concurrency_limit; a site starts at 5 and gains one per delivery.
        destinationConcurrency: z.coerce.number().int().min(1).max(100).default(20),
        maxMessagesPerConnection: z.coerce.number().int().min(1).max(10_000).default(100),
        idleTimeout: duration('delivery.idleTimeout').default(10_000),
        timeouts: z
          .object({
            connect: duration('delivery.timeouts.connect').default(DEFAULT_TIMEOUTS.connect),
            greeting: duration('delivery.timeouts.greeting').default(DEFAULT_TIMEOUTS.greeting),
            command: duration('delivery.timeouts.command').default(DEFAULT_TIMEOUTS.command),
            dataInit: duration('delivery.timeouts.dataInit').default(DEFAULT_TIMEOUTS.dataInit),
            dataBlock: duration('delivery.timeouts.dataBlock').default(DEFAULT_TIMEOUTS.dataBlock),
            dataDone: duration('delivery.timeouts.dataDone').default(DEFAULT_TIMEOUTS.dataDone),
          })
          .strict()
          .default(DEFAULT_TIMEOUTS),
      })
      .strict()
      .default({
        routes: {},
        smtpPort: 25,
        destinationConcurrency: 20,
        maxMessagesPerConnection: 100,
        idleTimeout: 10_000,
        timeouts: DEFAULT_TIMEOUTS,
      }),
    senders: z
      .object({
        /**
         * The return path (envelope sender) of every message is `<localPart>+<token>@<subdomain>.<domain>`:
         * under the sender's own domain so SPF aligns for DMARC (RFC 7489 §3.1.2), on a subdomain
         * whose MX is Lacre so bounces come back here. Empty subdomain: the domain itself.
         */
        returnPathSubdomain: z
          .string()
          .regex(/^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)?$/, 'expected one DNS label such as "bounces", or empty for the domain itself')
          .default('bounces'),
        returnPathLocalPart: z
          .string()
          .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$/, 'expected a short local part such as "bounce"')
          .default('bounce'),
        /** What the printed SPF record authorises. Neither set: `a:<hostname>`. */
        spfInclude: z.string().regex(/^[A-Za-z0-9._-]+$/, 'expected a domain such as spf.lacre.example').optional(),
        spfIp4: z.array(z.string().regex(/^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/, 'expected an IPv4 address or CIDR')).default([]),
        spfIp6: z.array(z.string().regex(/^[0-9A-Fa-f:.]+(\/\d{1,3})?$/, 'expected an IPv6 address or CIDR')).default([]),
        /** Aggregate report address for the starter DMARC record; `{domain}` is replaced. */
        dmarcRua: z.string().default('mailto:dmarc-reports@{domain}'),
        /** TLS-RPT report address for the domain's own inbound mail (RFC 8460); `{domain}` is replaced. */
        tlsRptRua: z.string().default('mailto:tls-reports@{domain}'),
        /** How long old DKIM keys stay published and usable for verification after a rotation. */
        dkimRotationGrace: duration('senders.dkimRotationGrace').default(7 * 86_400_000),
        /** How often the server re-checks the DNS of domains waiting on it (pending rotation, unverified). */
        recheckInterval: duration('senders.recheckInterval').default(3_600_000),
      })
      .strict()
      .default({
        returnPathSubdomain: 'bounces',
        returnPathLocalPart: 'bounce',
        spfIp4: [],
        spfIp6: [],
        dmarcRua: 'mailto:dmarc-reports@{domain}',
        tlsRptRua: 'mailto:tls-reports@{domain}',
        dkimRotationGrace: 7 * 86_400_000,
        recheckInterval: 3_600_000,
      }),
    bounces: z
      .object({
        /**
         * The MX for return-path domains: receives asynchronous bounces (DSNs). Off unless a port
         * is set, because a public MX needs port 25 and a deliberate firewall decision.
         */
        host: z.string().min(1).default('127.0.0.1'),
        port: port.optional(),
      })
      .strict()
      .default({ host: '127.0.0.1' }),
    submission: z
      .object({
        /** SMTP submission for clients (RFC 6409): STARTTLS on `port`, implicit TLS on `tlsPort` (RFC 8314 §3.3). */
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(1587),
        tlsPort: port.default(1465),
        /** PEM certificate chain and key; both unset: a self-signed pair is generated into the data dir. */
        tlsCert: z.string().min(1).optional(),
        tlsKey: z.string().min(1).optional(),
        /** Largest message accepted (SMTP SIZE, RFC 1870), in bytes. */
        maxSize: byteSize('submission.maxSize', 1024, 256 * 1024 * 1024).default(25 * 1024 * 1024),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 1587, tlsPort: 1465, maxSize: 25 * 1024 * 1024 })
      .refine((s) => (s.tlsCert === undefined) === (s.tlsKey === undefined), {
        message:
          'submission.tlsCert and submission.tlsKey go together (LACRE_SUBMISSION_TLS_CERT, LACRE_SUBMISSION_TLS_KEY): set both, or neither for a generated self-signed certificate',
      })
      .refine((s) => s.port === 0 || s.port !== s.tlsPort, {
        message: 'submission.port and submission.tlsPort must differ (one listener speaks STARTTLS, the other implicit TLS)',
      }),
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
        // A safety net only: intake, freed slots and due times wake the runner at once.
        pollInterval: duration('queue.pollInterval').default(5_000),
        // Batches in flight at once (Postfix default_process_limit).
        concurrency: z.coerce.number().int().min(1).max(1000).default(100),
        shutdownGrace: duration('queue.shutdownGrace').default(10_000),
      })
      .strict()
      .default({
        minBackoff: 300_000,
        maxBackoff: 4_000_000,
        maxAge: 5 * 86_400_000,
        lease: 300_000,
        pollInterval: 5_000,
        concurrency: 100,
        shutdownGrace: 10_000,
      })
      .refine((q) => q.minBackoff <= q.maxBackoff, {
        message: 'queue.minBackoff must not exceed queue.maxBackoff',
      })
      .refine((q) => q.lease >= 1_000, { message: 'queue.lease must be at least 1s' }),
    webhooks: z
      .object({
        /**
         * Webhooks to loopback addresses (http or https): how tests and receivers on the same
         * machine work. Switch off where API keys with `read` must not reach local services.
         */
        allowLoopback: booleanFlag().default(true),
        /** POSTs in flight at once per process, each to a different webhook. */
        concurrency: z.coerce.number().int().min(1).max(100).default(4),
        /** Events per POST at most. */
        batchSize: z.coerce.number().int().min(1).max(1000).default(100),
        /** Whole-request timeout, connect to last byte. */
        timeout: duration('webhooks.timeout').default(10_000),
        minBackoff: duration('webhooks.minBackoff').default(30_000),
        maxBackoff: duration('webhooks.maxBackoff').default(3_600_000),
        /** Give an event's delivery up this long after the event. */
        maxAge: duration('webhooks.maxAge').default(86_400_000),
        pollInterval: duration('webhooks.pollInterval').default(1_000),
      })
      .strict()
      .default({
        allowLoopback: true,
        concurrency: 4,
        batchSize: 100,
        timeout: 10_000,
        minBackoff: 30_000,
        maxBackoff: 3_600_000,
        maxAge: 86_400_000,
        pollInterval: 1_000,
      })
      .refine((w) => w.minBackoff <= w.maxBackoff, { message: 'webhooks.minBackoff must not exceed webhooks.maxBackoff' }),
  })
  .strict();

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
