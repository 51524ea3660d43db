// The Idempotency-Key request header of the send API: a client that did not hear the answer can
// send the same request again with the same key and gets the first answer back, byte for byte,
// while nothing is sent twice. Keys belong to the API key that used them and live 24 hours. The
// first request claims its key in a transaction before doing anything, so of two concurrent
// duplicates only one ever runs; a key reused with another body is refused (422).
import { createHash } from 'node:crypto';
import type { Store } from '../store/store.ts';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
const MAX_LENGTH = 255;

export type HeaderCheck = { ok: true; key: string | null } | { ok: false; message: string };

/** The header's key, null when absent; 1–255 printable ASCII characters. */
export function parseIdempotencyHeader(value: string | string[] | undefined): HeaderCheck {
  if (value === undefined) return { ok: true, key: null };
  if (Array.isArray(value)) return { ok: false, message: 'give the Idempotency-Key header once' };
  if (value.length === 0 || value.length > MAX_LENGTH) return { ok: false, message: `an Idempotency-Key is 1 to ${MAX_LENGTH} characters` };
  if (!/^[\x20-\x7e]+$/.test(value)) return { ok: false, message: 'an Idempotency-Key is printable ASCII' };
  return { ok: true, key: value };
}

export type Begun =
  | { kind: 'run'; id: string }
  | { kind: 'replay'; status: number; body: Buffer }
  | { kind: 'mismatch' }
  | { kind: 'in-progress'; since: number };

export class IdempotencyKeys {
  readonly #store: Store;
  readonly #clock: () => number;

  constructor(store: Store, clock: () => number = Date.now) {
    this.#store = store;
    this.#clock = clock;
  }

  /** Claims the key for this request, or says what to answer instead of running it. */
  async begin(apiKeyId: string, key: string, body: Buffer): Promise<Begun> {
    // Keyed hashes: the table holds neither the clients' keys nor anything derived from the
    // bodies (addresses) that could be guessed and checked offline.
    const id = this.#store.sealer.lookupHash('idempotency-key', `${apiKeyId}\0${key}`);
    const requestHash = this.#store.sealer.lookupHash('idempotency-request', createHash('sha256').update(body).digest('hex'));
    const claim = await this.#store.sendApi.claimIdempotencyKey({ id, apiKeyId, requestHash, now: this.#clock(), ttlMs: IDEMPOTENCY_TTL_MS });
    return claim.kind === 'claimed' ? { kind: 'run', id } : claim;
  }

  /** Keeps the answer (committed before the client is sent it). */
  async finish(id: string, status: number, body: Buffer): Promise<void> {
    await this.#store.sendApi.completeIdempotencyKey(id, status, body);
  }

  /** Forgets a claim whose request did nothing (a server error before any message was queued). */
  async abandon(id: string): Promise<void> {
    await this.#store.sendApi.releaseIdempotencyKey(id);
  }
}
