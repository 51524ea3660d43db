// Structured JSON logging (pino). Rules: no message bodies, no secrets, and recipient addresses
// only as a short keyed hash (Sealer.logTag). Redaction below is the safety net for mistakes,
// not the mechanism: code logs tags and ids, never addresses.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

// Field names that carry secrets or personal data wherever they appear (two levels deep).
const SENSITIVE = [
  'password',
  'pass',
  'secret',
  'secretKey',
  'masterKey',
  'apiSecret',
  'authorization',
  'cookie',
  'content',
  'body',
  'data',
  'address',
  'email',
  'from',
  'to',
  'cc',
  'bcc',
  'sender',
  'recipient',
  'recipients',
];

const REDACT_PATHS = [
  ...SENSITIVE,
  ...SENSITIVE.map((k) => `*.${k}`),
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-api-key"]',
];

export function createLogger(options: { level: string; destination?: DestinationStream | number; name?: string }): Logger {
  return pino(
    {
      level: options.level,
      base: { service: options.name ?? 'lacre' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: typeof options.destination === 'number' ? options.destination : 1, sync: true }),
  );
}
