// Slow hashing of API secret keys (scrypt, RFC 7914). Owns the stored format
// `scrypt$N$r$p$<salt base64>$<hash base64>`: the parameters travel with each hash, so they can be
// raised later and old hashes still verify. Always the async crypto.scrypt (libuv thread pool),
// never scryptSync: this runs on request paths and must not block the event loop.
//
// Parameters: N=2^15, r=8, p=1 uses 128·N·r = 32 MiB and takes ~50-100 ms on one server core.
// The secrets are 128 random bits, so no dictionary can guess them and the slow hash is defence in
// depth for a leaked database; 2^15 (scrypt's own interactive-login recommendation) keeps the cost
// of each cache miss in ./api-keys.ts bounded (four default thread-pool workers → 128 MiB at most)
// while making every guess against a stolen hash cost an attacker the same 32 MiB and tens of ms.
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export const SCRYPT_PARAMS: Readonly<ScryptParams> = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });

const SALT_BYTES = 16;
const HASH_BYTES = 32;
/** Stored hashes asking for more memory than this are refused rather than computed. */
const MAX_MEMORY = 256 * 1024 * 1024;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const DECIMAL = /^[1-9][0-9]{0,9}$/;

/** The memory OpenSSL's scrypt needs (V: 128·r·(N+2), B: 128·r·p), plus slack. */
function memoryFor({ N, r, p }: ScryptParams): number {
  return 128 * r * (N + 2) + 128 * r * p + 1024 * 1024;
}

function derive(secret: string, salt: Buffer, length: number, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(secret, salt, length, { ...params, maxmem: memoryFor(params) }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Hashes a secret under a fresh random salt, in the stored format. */
export async function hashSecret(secret: string, params: ScryptParams = SCRYPT_PARAMS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(secret, salt, HASH_BYTES, params);
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64'), hash.toString('base64')].join('$');
}

/**
 * Whether `secret` matches a stored hash, compared in constant time. A malformed, truncated or
 * out-of-bounds stored value is false, never an exception.
 */
export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  try {
    const parsed = parseStored(stored);
    if (!parsed) return false;
    const candidate = await derive(secret, parsed.salt, parsed.hash.length, parsed.params);
    return timingSafeEqual(candidate, parsed.hash);
  } catch {
    return false;
  }
}

function parseStored(stored: unknown): { params: ScryptParams; salt: Buffer; hash: Buffer } | null {
  if (typeof stored !== 'string') return null;
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [, n, r, p, salt, hash] = parts;
  if (!DECIMAL.test(n) || !DECIMAL.test(r) || !DECIMAL.test(p)) return null;
  const params = { N: Number(n), r: Number(r), p: Number(p) };
  // N must be a power of two above 1; r·p is bounded by RFC 7914 at 2^30.
  if (params.N < 2 || (params.N & (params.N - 1)) !== 0 || params.r * params.p >= 2 ** 30) return null;
  if (memoryFor(params) > MAX_MEMORY || params.p > 16) return null;
  if (!BASE64.test(salt) || !BASE64.test(hash) || salt.length % 4 !== 0 || hash.length % 4 !== 0) return null;
  const saltBytes = Buffer.from(salt, 'base64');
  const hashBytes = Buffer.from(hash, 'base64');
  if (saltBytes.length < 8 || hashBytes.length < 16 || hashBytes.length > 64) return null;
  return { params, salt: saltBytes, hash: hashBytes };
}
