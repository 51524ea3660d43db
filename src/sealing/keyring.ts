// The master keys that seal data at rest: the current one (LACRE_MASTER_KEY, or data/master.key
// generated on first start with mode 0600) and retired ones kept only to open values sealed before a
// rotation (data/keys/*.key, LACRE_RETIRED_MASTER_KEYS).
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface MasterKey {
  /** 8 bytes derived from the key itself; stored in every sealed value so keys can rotate. */
  id: Buffer;
  idHex: string;
  key: Buffer;
}

export interface Keyring {
  current: MasterKey;
  /** Every key that can open values, current included, by id. */
  byId: Map<string, MasterKey>;
  /** Where the current key came from, for operators (never the key itself). */
  source: 'env' | 'file';
}

/** A key the operator configured or stored wrongly: the message names the setting or file and the fix. */
export class KeyringError extends Error {
  override name = 'KeyringError';
}

export function masterKeyFrom(key: Buffer, source = 'a master key'): MasterKey {
  if (key.length !== 32) {
    throw new KeyringError(`${source} must be 32 random bytes in base64 (${key.length} bytes given); make one with: openssl rand -base64 32`);
  }
  const id = createHash('sha256').update('lacre key id\0').update(key).digest().subarray(0, 8);
  return { id, idHex: id.toString('hex'), key };
}

export function masterKeyPath(dataDir: string): string {
  return join(dataDir, 'master.key');
}

function retiredKeysDir(dataDir: string): string {
  return join(dataDir, 'keys');
}

function readKeyFile(path: string): Buffer {
  const mode = statSync(path).mode & 0o777;
  // A key readable by others is a leaked key: refuse rather than quietly use it.
  if (mode & 0o077) {
    throw new KeyringError(`${path} is readable by other users (mode ${mode.toString(8)}); run: chmod 600 ${path}`);
  }
  const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  if (key.length !== 32) throw new KeyringError(`${path} does not hold a 32-byte base64 key; restore it from a backup (a new key cannot open what the old one sealed)`);
  return key;
}

function writeKeyFile(path: string, key: Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, key.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export interface KeyringOptions {
  dataDir: string;
  masterKey?: string;
  retiredMasterKeys?: string[];
}

/** Loads the keyring, generating data/master.key on first start when no key is configured. */
export function loadKeyring(options: KeyringOptions): Keyring {
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  let current: MasterKey;
  let source: Keyring['source'];
  if (options.masterKey) {
    current = masterKeyFrom(Buffer.from(options.masterKey, 'base64'), 'LACRE_MASTER_KEY');
    source = 'env';
  } else {
    const path = masterKeyPath(options.dataDir);
    if (!existsSync(path)) writeKeyFile(path, randomBytes(32));
    current = masterKeyFrom(readKeyFile(path));
    source = 'file';
  }
  const byId = new Map<string, MasterKey>([[current.idHex, current]]);
  for (const [i, encoded] of (options.retiredMasterKeys ?? []).entries()) {
    const key = masterKeyFrom(Buffer.from(encoded, 'base64'), `LACRE_RETIRED_MASTER_KEYS entry ${i + 1}`);
    if (!byId.has(key.idHex)) byId.set(key.idHex, key);
  }
  const dir = retiredKeysDir(options.dataDir);
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).filter((n) => n.endsWith('.key'))) {
      const key = masterKeyFrom(readKeyFile(join(dir, name)), join(dir, name));
      if (!byId.has(key.idHex)) byId.set(key.idHex, key);
    }
  }
  return { current, byId, source };
}

/**
 * Where a running process reads its keyring again from (Sealer.refresh): `fingerprint` is cheap (a
 * stat and a directory listing) and changes whenever `lacre sealing rotate-key` writes a new
 * master key or retires one, so a server notices a rotation without a restart.
 */
export interface KeyringSource {
  load(): Keyring;
  fingerprint(): string;
}

export function keyringSource(options: KeyringOptions): KeyringSource {
  return {
    load: () => loadKeyring(options),
    fingerprint() {
      const parts: string[] = [];
      if (!options.masterKey) {
        const path = masterKeyPath(options.dataDir);
        // A missing file is a fingerprint too: load() then says what is wrong.
        const st = existsSync(path) ? statSync(path) : null;
        // ctime and mode too: a chmod that makes the key readable by others must be noticed (readKeyFile refuses it).
        parts.push(st ? `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.mode}` : 'none');
      }
      const dir = retiredKeysDir(options.dataDir);
      if (existsSync(dir)) parts.push(...readdirSync(dir).filter((n) => n.endsWith('.key')).sort());
      return parts.join('|');
    },
  };
}

/**
 * How long `rotate-key` waits after writing the new key before it re-seals: running servers check
 * their keyring at most this often (Sealer.refresh), so after it none seals under the old key any
 * more, and the re-seal pass and the removal of the old key cannot miss a value they wrote.
 */
export const KEYRING_CHECK_MS = 1_000;

/**
 * Makes a new current key in data/master.key and keeps the old one in data/keys/ so values sealed
 * under it can still be opened until they are re-sealed. Refuses when the key comes from the
 * environment: Lacre cannot change an operator's environment, so rotation is theirs to do.
 */
export function rotateMasterKeyFile(keyring: Keyring, dataDir: string): Keyring {
  if (keyring.source === 'env') {
    throw new KeyringError(
      'the master key comes from LACRE_MASTER_KEY: put a new key there, move the old one to ' +
        'LACRE_RETIRED_MASTER_KEYS, then run `lacre sealing reseal`',
    );
  }
  const dir = retiredKeysDir(dataDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Keep the old key first: a crash between the two writes must never lose the only copy of a key.
  const retiredPath = join(dir, `${keyring.current.idHex}.key`);
  if (!existsSync(retiredPath)) writeKeyFile(retiredPath, keyring.current.key);
  writeKeyFile(masterKeyPath(dataDir), randomBytes(32));
  return loadKeyring({ dataDir });
}

/** Deletes retired key files that no stored value needs any more. Returns the ids removed. */
export function removeRetiredKeyFiles(dataDir: string, stillNeeded: Set<string>): string[] {
  const dir = retiredKeysDir(dataDir);
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(dir).filter((n) => n.endsWith('.key'))) {
    const id = name.slice(0, -'.key'.length);
    if (stillNeeded.has(id)) continue;
    const path = join(dir, name);
    // Overwrite first so the key does not linger in the file's blocks on simple filesystems.
    writeFileSync(path, randomBytes(64));
    rmSync(path);
    removed.push(id);
  }
  return removed;
}
