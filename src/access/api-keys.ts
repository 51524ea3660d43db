// API keys: creating, listing, disabling, enabling and deleting them (each change audited), and
// authenticating an (API key, secret key) pair. Owns the key formats and the verification cache.
// Secrets are returned once by create() and otherwise never leave this module: not stored (only a
// scrypt hash), not logged, not put in audit entries.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/store.ts';
import { TOUCH_INTERVAL_MS, type ApiKeyRecord } from '../store/api-keys-table.ts';
import { SCOPES, ScopeError, isScope, type Scope } from './scopes.ts';
import { hashSecret, verifySecret } from './secret-hash.ts';

/** Both halves of a credential: 32 lowercase hex characters (128 random bits), like Mailjet's. */
const KEY_FORMAT = /^[0-9a-f]{32}$/;
const NAME_MAX = 100;

export interface CreatedApiKey {
  apiKey: string;
  /** Shown once, here; only its hash is stored. */
  secretKey: string;
  name: string;
  scopes: Scope[];
  createdAt: string;
}

/** A key as operators see it: never its secret, nor the secret's hash. */
export interface ApiKeyView {
  apiKey: string;
  name: string;
  scopes: Scope[];
  createdAt: string;
  disabledAt: string | null;
  lastUsedAt: string | null;
}

/** Who a request authenticated as. */
export interface AuthenticatedKey {
  id: string;
  name: string;
  scopes: Scope[];
}

export class KeyNameError extends Error {
  override name = 'KeyNameError';
}

export interface ApiKeysOptions {
  now?: () => number;
  /** How long a successful verification is remembered (default 60 s). */
  cacheTtlMs?: number;
  /** How many keys' verifications are remembered at most (default 1000). */
  cacheMaxEntries?: number;
}

interface CacheEntry {
  /** SHA-256 of the secret that verified: a fast check, worthless to anyone reading memory. */
  digest: Buffer;
  /** The stored hash it verified against: a key recreated under the same id misses. */
  secretHash: string;
  expiresAt: number;
}

/** A scrypt under way; requests with the same credentials wait for it instead of starting their own. */
interface Flight {
  /** SHA-256 of the secret being verified, compared in constant time like the cache's. */
  digest: Buffer;
  secretHash: string;
  verified: Promise<boolean>;
}

let dummyHash: Promise<string> | undefined;

export class ApiKeys {
  readonly #store: Store;
  readonly #now: () => number;
  readonly #ttl: number;
  readonly #maxEntries: number;
  /** apiKey → recent successful verification; Map order is insertion order, oldest first. */
  readonly #cache = new Map<string, CacheEntry>();
  /** apiKey → verifications running now (one per distinct secret tried). */
  readonly #flights = new Map<string, Flight[]>();
  /** Counters for tests and metrics: how authentications were decided. */
  readonly stats = { hashVerifications: 0, cacheHits: 0 };

  constructor(store: Store, options: ApiKeysOptions = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#ttl = options.cacheTtlMs ?? 60_000;
    this.#maxEntries = Math.max(1, options.cacheMaxEntries ?? 1000);
  }

  /** Creates a key; the returned secret is the only copy there will ever be. */
  async create(options: { name: string; scopes: readonly Scope[]; actor: string }): Promise<CreatedApiKey> {
    const name = checkName(options.name);
    const scopes = checkScopes(options.scopes);
    const apiKey = randomBytes(16).toString('hex');
    const secretKey = randomBytes(16).toString('hex');
    const createdAt = this.#now();
    await this.#store.apiKeys.insert({ id: apiKey, name, scopes, secretHash: await hashSecret(secretKey), createdAt });
    await this.#store.audit.append({ actor: options.actor, action: 'key.create', subject: apiKey, detail: { name, scopes }, at: createdAt });
    return { apiKey, secretKey, name, scopes, createdAt: new Date(createdAt).toISOString() };
  }

  async list(): Promise<ApiKeyView[]> {
    return (await this.#store.apiKeys.list()).map(toView);
  }

  async get(apiKey: string): Promise<ApiKeyView | null> {
    const record = await this.#store.apiKeys.get(apiKey);
    return record ? toView(record) : null;
  }

  /** Stops the key working at once, here and in every other process. Null for an unknown key. */
  async disable(apiKey: string, actor: string): Promise<ApiKeyView | null> {
    this.#cache.delete(apiKey);
    return this.#setDisabled(apiKey, actor, true);
  }

  async enable(apiKey: string, actor: string): Promise<ApiKeyView | null> {
    return this.#setDisabled(apiKey, actor, false);
  }

  /** Deletes the key for good. False for an unknown key. */
  async delete(apiKey: string, actor: string): Promise<boolean> {
    this.#cache.delete(apiKey);
    const record = await this.#store.apiKeys.get(apiKey);
    if (!record) return false;
    if (!(await this.#store.apiKeys.delete(apiKey))) return false;
    await this.#store.audit.append({ actor, action: 'key.delete', subject: apiKey, detail: auditDetail(record), at: this.#now() });
    return true;
  }

  /**
   * The key these credentials belong to, or null when the key is unknown, disabled, or the secret
   * is wrong (the caller cannot tell which). An unknown key still costs a scrypt, so response
   * times do not reveal which keys exist. A verification is remembered for a minute (as a SHA-256
   * of the secret, compared in constant time) so busy clients do not pay a scrypt per request;
   * the key's row is read on every call, so disabling it anywhere takes effect at once.
   * Concurrent calls with the same credentials (a client opening 20 SMTP connections at once)
   * share one scrypt; a call with another secret never shares one, and an outcome is kept only
   * while it is being computed, so a refusal is not remembered.
   */
  async authenticate(apiKey: string, secretKey: string): Promise<AuthenticatedKey | null> {
    // Malformed credentials are refused before any lookup: this says nothing about which keys exist.
    if (typeof apiKey !== 'string' || typeof secretKey !== 'string' || !KEY_FORMAT.test(apiKey) || !KEY_FORMAT.test(secretKey)) {
      return null;
    }
    const now = this.#now();
    const record = await this.#store.apiKeys.get(apiKey);
    const digest = createHash('sha256').update(secretKey).digest();
    if (!record) {
      // Shared like a known key's, so concurrency does not tell known keys from unknown ones either.
      await this.#verifyShared(apiKey, secretKey, digest, await (dummyHash ??= hashSecret(randomBytes(16).toString('hex'))));
      return null;
    }
    const cached = this.#cache.get(apiKey);
    let verified: boolean;
    if (cached && cached.expiresAt > now && cached.secretHash === record.secretHash && timingSafeEqual(cached.digest, digest)) {
      this.stats.cacheHits++;
      verified = true;
    } else {
      if (cached && cached.expiresAt <= now) this.#cache.delete(apiKey);
      verified = await this.#verifyShared(apiKey, secretKey, digest, record.secretHash);
      if (verified && record.disabledAt === null) this.#remember(apiKey, { digest, secretHash: record.secretHash, expiresAt: now + this.#ttl });
    }
    if (!verified) return null;
    if (record.disabledAt !== null) {
      this.#cache.delete(apiKey);
      return null;
    }
    if (record.lastUsedAt === null || now - record.lastUsedAt >= TOUCH_INTERVAL_MS) {
      try {
        await this.#store.apiKeys.touch(apiKey, now);
      } catch {
        // The last-used time is informational: a busy database must not fail the request.
      }
    }
    return { id: record.id, name: record.name, scopes: record.scopes.filter(isScope) };
  }

  /** verifySecret, joined with one already running for the same key, secret and stored hash. */
  #verifyShared(apiKey: string, secretKey: string, digest: Buffer, secretHash: string): Promise<boolean> {
    const flights = this.#flights.get(apiKey) ?? [];
    let joined: Flight | undefined;
    // Every flight is compared, so the time taken does not depend on which one matched.
    for (const flight of flights) {
      if (timingSafeEqual(flight.digest, digest) && flight.secretHash === secretHash) joined ??= flight;
    }
    if (joined) return joined.verified;
    this.stats.hashVerifications++;
    const flight: Flight = { digest, secretHash, verified: verifySecret(secretKey, secretHash) };
    flights.push(flight);
    this.#flights.set(apiKey, flights);
    // verifySecret never rejects (a bad stored value is false), so the outcome is all there is.
    void flight.verified.then(() => {
      const list = this.#flights.get(apiKey);
      if (!list) return;
      const rest = list.filter((f) => f !== flight);
      if (rest.length > 0) this.#flights.set(apiKey, rest);
      else this.#flights.delete(apiKey);
    });
    return flight.verified;
  }

  #remember(apiKey: string, entry: CacheEntry): void {
    this.#cache.delete(apiKey);
    this.#cache.set(apiKey, entry);
    // Bounded: at most one eviction per insertion, oldest first.
    if (this.#cache.size > this.#maxEntries) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
  }

  async #setDisabled(apiKey: string, actor: string, disable: boolean): Promise<ApiKeyView | null> {
    const record = await this.#store.apiKeys.get(apiKey);
    if (!record) return null;
    // Already in the asked state: nothing changes, nothing is audited.
    if ((record.disabledAt !== null) === disable) return toView(record);
    const at = this.#now();
    if (!(await this.#store.apiKeys.setDisabled(apiKey, disable ? at : null))) return null;
    await this.#store.audit.append({
      actor,
      action: disable ? 'key.disable' : 'key.enable',
      subject: apiKey,
      detail: auditDetail(record),
      at,
    });
    return toView({ ...record, disabledAt: disable ? at : null });
  }
}

function checkName(name: unknown): string {
  const trimmed = typeof name === 'string' ? name.trim() : '';
  if (trimmed === '') throw new KeyNameError('a key needs a name (what uses it, e.g. "billing app")');
  if (trimmed.length > NAME_MAX) throw new KeyNameError(`key names are at most ${NAME_MAX} characters`);
  if (/[\u0000-\u001f\u007f]/.test(trimmed)) throw new KeyNameError('key names cannot contain control characters');
  return trimmed;
}

function checkScopes(scopes: readonly string[]): Scope[] {
  if (!Array.isArray(scopes) || scopes.length === 0) throw new ScopeError(`a key needs at least one scope: ${SCOPES.join(', ')}`);
  for (const scope of scopes) {
    if (!isScope(scope)) throw new ScopeError(`unknown scope "${scope}": expected one of ${SCOPES.join(', ')}`);
  }
  return SCOPES.filter((s) => scopes.includes(s));
}

function auditDetail(record: ApiKeyRecord): Record<string, unknown> {
  return { name: record.name, scopes: record.scopes };
}

function toView(record: ApiKeyRecord): ApiKeyView {
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    apiKey: record.id,
    name: record.name,
    scopes: record.scopes.filter(isScope),
    createdAt: iso(record.createdAt)!,
    disabledAt: iso(record.disabledAt),
    lastUsedAt: iso(record.lastUsedAt),
  };
}
