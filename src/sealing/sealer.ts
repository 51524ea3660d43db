// Seals personal data and message content before it reaches any store engine (AES-256-GCM), and
// computes keyed hashes (HMAC-SHA256) so lookups by address never need plaintext.
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, hkdfSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { KEYRING_CHECK_MS, type Keyring, type KeyringSource, type MasterKey } from './keyring.ts';
import { domainKey } from '../mail/domain.ts';
import { normalizeAddress } from '../mail/address.ts';

// Layout of a sealed value: version (1) | key id (8) | IV (12) | ciphertext | GCM tag (16).
const VERSION = 1;
const ID_LEN = 8;
const IV_LEN = 12;
const TAG_LEN = 16;
const HEADER_LEN = 1 + ID_LEN + IV_LEN;
const VERSION_BYTE = Buffer.from([VERSION]);

export class SealError extends Error {
  override name = 'SealError';
}

// Keys are held as KeyObjects, not Buffers: given a Buffer, createCipheriv and createHmac first
// probe it as a KeyObject and as a CryptoKey, and each failed probe throws and catches an error
// internally, which costs more than the AES-GCM or HMAC itself on values of a few KB (Node 24).
/** Whether the keys a process seals with are still the data dir's (readiness, server/health.ts). */
export type KeyringStatus = { ok: true; currentKeyId: string } | { ok: false; currentKeyId: string; reason: string };

export class Sealer {
  #keyring: Keyring;
  #dataKeys = new Map<string, KeyObject>();
  #lookupKey: KeyObject | null = null;
  #source: KeyringSource | undefined;
  #fingerprint = '';
  #checkedAt = 0;
  #refreshError: string | null = null;
  #clock: () => number;

  /**
   * With a `source`, the sealer follows the data dir's keyring: `lacre sealing rotate-key` beside
   * a running server makes it seal under the new key within KEYRING_CHECK_MS, and a value sealed
   * under a key it does not hold yet makes it read the keyring again before giving up. Keys it held
   * before stay held, so what it sealed a moment ago still opens.
   */
  constructor(keyring: Keyring, options: { source?: KeyringSource; clock?: () => number } = {}) {
    this.#keyring = keyring;
    this.#source = options.source;
    this.#clock = options.clock ?? Date.now;
    if (this.#source) {
      this.#fingerprint = this.#source.fingerprint();
      this.#checkedAt = this.#clock();
    }
  }

  /**
   * Reads the keyring again when its files changed (at most every KEYRING_CHECK_MS unless `force`).
   * A keyring that fails to load (a key file made world-readable, a truncated key) keeps the keys
   * already held and is reported here, so readiness fails with the reason instead of sealing stopping.
   */
  refresh(force = false): KeyringStatus {
    const source = this.#source;
    if (source) {
      const now = this.#clock();
      if (force || now - this.#checkedAt >= KEYRING_CHECK_MS) {
        this.#checkedAt = now;
        try {
          const fingerprint = source.fingerprint();
          if (fingerprint !== this.#fingerprint || this.#refreshError !== null) {
            const next = source.load();
            const byId = new Map(next.byId);
            for (const [id, key] of this.#keyring.byId) if (!byId.has(id)) byId.set(id, key);
            this.#keyring = { current: next.current, byId, source: next.source };
            this.#fingerprint = fingerprint;
            this.#refreshError = null;
          }
        } catch (err) {
          this.#refreshError = (err as Error).message;
        }
      }
    }
    const currentKeyId = this.currentKeyId;
    return this.#refreshError === null ? { ok: true, currentKeyId } : { ok: false, currentKeyId, reason: this.#refreshError };
  }

  get currentKeyId(): string {
    return this.#keyring.current.idHex;
  }

  get keyIds(): string[] {
    return [...this.#keyring.byId.keys()];
  }

  /**
   * Encrypts a value. `context` names where it will live (e.g. "recipients.address") and is
   * authenticated, so a sealed value copied into another column or table fails to open.
   */
  seal(plaintext: Buffer | string, context: string): Buffer {
    if (this.#source) this.refresh();
    const master = this.#keyring.current;
    const iv = randomBytes(IV_LEN);
    const header = Buffer.concat([VERSION_BYTE, master.id, iv]);
    const cipher = createCipheriv('aes-256-gcm', this.#dataKey(master), iv);
    cipher.setAAD(Buffer.concat([header, Buffer.from(context, 'utf8')]));
    const body = cipher.update(typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext);
    return Buffer.concat([header, body, cipher.final(), cipher.getAuthTag()]);
  }

  open(sealed: Uint8Array, context: string): Buffer {
    const value = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (value.length < HEADER_LEN + TAG_LEN || value[0] !== VERSION) {
      throw new SealError(`sealed value for ${context} is malformed`);
    }
    const idHex = value.subarray(1, 1 + ID_LEN).toString('hex');
    // A value re-sealed by `rotate-key` under a key this process has not read yet: read it now.
    const master = this.#keyring.byId.get(idHex) ?? (this.#source ? (this.refresh(true), this.#keyring.byId.get(idHex)) : undefined);
    if (!master) throw new SealError(`sealed value for ${context} needs key ${idHex}, which is not in the keyring`);
    const header = value.subarray(0, HEADER_LEN);
    const decipher = createDecipheriv('aes-256-gcm', this.#dataKey(master), value.subarray(1 + ID_LEN, HEADER_LEN));
    decipher.setAAD(Buffer.concat([header, Buffer.from(context, 'utf8')]));
    decipher.setAuthTag(value.subarray(value.length - TAG_LEN));
    try {
      // GCM releases no bytes at final(), which only checks the tag: no second copy of the value.
      const plaintext = decipher.update(value.subarray(HEADER_LEN, value.length - TAG_LEN));
      decipher.final();
      return plaintext;
    } catch {
      throw new SealError(`sealed value for ${context} failed authentication (tampered, or sealed for another place)`);
    }
  }

  openString(sealed: Uint8Array, context: string): string {
    return this.open(sealed, context).toString('utf8');
  }

  /** The id of the key a value was sealed with, without opening it. */
  static keyIdOf(sealed: Uint8Array): string {
    return Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength).subarray(1, 1 + ID_LEN).toString('hex');
  }

  /** Re-seals a value under the current key, or returns null when it already is. */
  reseal(sealed: Uint8Array, context: string): Buffer | null {
    if (Sealer.keyIdOf(sealed) === this.currentKeyId) return null;
    return this.seal(this.open(sealed, context), context);
  }

  /**
   * The lookup key is random and kept (sealed) in the store rather than derived from the master
   * key, so that rotating the master key does not change every stored hash (suppression lists,
   * address lookups) and can be done row by row.
   */
  setLookupKey(key: Buffer): void {
    if (key.length !== 32) throw new Error('lookup key must be 32 bytes');
    this.#lookupKey = createSecretKey(key);
  }

  /** Keyed hash used for equality lookups; `kind` separates e.g. addresses from domains. */
  lookupHash(kind: string, value: string): string {
    if (!this.#lookupKey) throw new Error('lookup key not loaded (open the store first)');
    return createHmac('sha256', this.#lookupKey).update(`${kind}\0${value}`).digest('hex');
  }

  addressHash(address: string): string {
    return this.lookupHash('address', normalizeAddress(address));
  }

  domainHash(domain: string): string {
    return this.lookupHash('domain', domainKey(domain));
  }

  /** A short keyed hash of an address for logs: correlates lines without revealing who. */
  logTag(address: string): string {
    return this.addressHash(address).slice(0, 12);
  }

  #dataKey(master: MasterKey): KeyObject {
    let key = this.#dataKeys.get(master.idHex);
    if (!key) {
      // Domain separation: the master key itself never encrypts data, so adding uses later is safe.
      key = createSecretKey(Buffer.from(hkdfSync('sha256', master.key, Buffer.alloc(0), 'lacre seal v1', 32)));
      this.#dataKeys.set(master.idHex, key);
    }
    return key;
  }
}
