// Identifiers: UUIDv7 (RFC 9562 §5.7), time-ordered so new rows append to indexes instead of
// scattering, and unguessable in their 62 random bits (rand_b).
import { randomBytes } from 'node:crypto';

// RFC 9562 §6.2 method 1: within one millisecond, rand_a is a counter (seeded at random in its
// lower half), so ids made by one process sort in the order they were made. Audit entries and
// attempts written in the same millisecond keep their order.
let lastMs = -1;
let counter = 0;

// Random bytes are drawn from a pool refilled 4 KiB at a time: one CSPRNG call per 256 ids instead
// of one per id (every message makes a dozen ids: recipients, attempts, events, outbox rows).
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

function random16(): Buffer {
  if (poolOffset + 16 > pool.length) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  const out = Buffer.allocUnsafe(16);
  pool.copy(out, 0, poolOffset, poolOffset + 16);
  // Used bytes are wiped so the pool never hands out the same randomness twice.
  pool.fill(0, poolOffset, poolOffset + 16);
  poolOffset += 16;
  return out;
}

export function uuidv7(now = Date.now()): string {
  const bytes = random16();
  let ms = now;
  // Only a burst within the current millisecond counts up; a time given from the past (tests,
  // back-dated records) keeps its own timestamp.
  if (ms === lastMs || (ms < lastMs && lastMs - ms <= 1)) {
    ms = lastMs;
    counter++;
    if (counter > 0xfff) {
      // Counter exhausted: borrow the next millisecond, as §6.2 allows.
      ms = lastMs + 1;
      counter = bytes.readUInt16BE(6) & 0x7ff;
    }
  } else {
    counter = bytes.readUInt16BE(6) & 0x7ff;
  }
  lastMs = ms;
  bytes.writeUIntBE(ms, 0, 6);
  bytes.writeUInt16BE(0x7000 | counter, 6);
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
