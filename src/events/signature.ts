// Webhook signatures, like Stripe's: the header `X-Lacre-Signature: t=<unix seconds>,v1=<hex>`
// where v1 = HMAC-SHA256(secret, `<t>.<raw body>`). Signing the timestamp with the body lets a
// receiver refuse replays older than its tolerance (5 minutes by default); several v1 values may be
// present (a receiver accepts any that matches, for secret rotation). Exported for receivers'
// tests and for anyone writing a receiver in TypeScript. Pure; node:crypto only.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'X-Lacre-Signature';
/** How far a signature's timestamp may be from the receiver's clock, by default. */
export const DEFAULT_TOLERANCE_SECONDS = 300;

/** A new signing secret: `whsec_` and 32 random bytes in base64url. The whole string is the HMAC key. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

function hmacHex(secret: string, timestamp: number, body: string | Buffer): string {
  return createHmac('sha256', secret)
    .update(`${timestamp}.`)
    .update(typeof body === 'string' ? Buffer.from(body, 'utf8') : body)
    .digest('hex');
}

/** The X-Lacre-Signature value for `body` sent at `nowMs`. */
export function signWebhookBody(secret: string, body: string | Buffer, nowMs: number = Date.now()): string {
  const t = Math.floor(nowMs / 1000);
  return `t=${t},v1=${hmacHex(secret, t, body)}`;
}

export type SignatureCheck =
  | { valid: true; timestamp: number }
  | { valid: false; reason: 'malformed' | 'stale' | 'mismatch'; message: string };

/**
 * Checks an X-Lacre-Signature header against the raw request body (the exact bytes received,
 * before any JSON parsing). `now` in milliseconds (Date.now()); `toleranceSeconds` bounds how far
 * the signed timestamp may be from now, either way. Comparison is constant-time.
 */
export function verifyWebhookSignature(
  secret: string,
  header: string | string[] | undefined,
  body: string | Buffer,
  now: number = Date.now(),
  toleranceSeconds: number = DEFAULT_TOLERANCE_SECONDS,
): SignatureCheck {
  const value = Array.isArray(header) ? header.join(',') : header;
  if (!value) return { valid: false, reason: 'malformed', message: `no ${SIGNATURE_HEADER} header` };
  let timestamp: number | null = null;
  const signatures: Buffer[] = [];
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (key === 't' && /^\d{1,12}$/.test(v)) timestamp = Number(v);
    else if (key === 'v1' && /^[0-9a-f]{64}$/i.test(v)) signatures.push(Buffer.from(v, 'hex'));
  }
  if (timestamp === null) return { valid: false, reason: 'malformed', message: `${SIGNATURE_HEADER} has no t=<unix seconds>` };
  if (signatures.length === 0) return { valid: false, reason: 'malformed', message: `${SIGNATURE_HEADER} has no v1=<hex HMAC-SHA256>` };
  const skew = Math.abs(Math.floor(now / 1000) - timestamp);
  if (skew > toleranceSeconds) {
    return { valid: false, reason: 'stale', message: `signature timestamp is ${skew}s away from now (tolerance ${toleranceSeconds}s): a replay?` };
  }
  const expected = Buffer.from(hmacHex(secret, timestamp, body), 'hex');
  // Every candidate is compared in full, so timing tells nothing about which one (if any) matched.
  let matched = false;
  for (const candidate of signatures) matched = timingSafeEqual(candidate, expected) || matched;
  return matched
    ? { valid: true, timestamp }
    : { valid: false, reason: 'mismatch', message: 'signature does not match the body (tampered, or signed with another secret)' };
}
