// DKIM key material for sender domains: owns key pair generation and the DKIM key record (the TXT
// value at <selector>._domainkey.<domain>, RFC 6376 §3.6.1, RFC 8463 for Ed25519), both writing it
// and reading one back from DNS.
import { generateKeyPairSync } from 'node:crypto';
import type { DkimAlgorithm } from '../store/domains-table.ts';

export type { DkimAlgorithm };

export interface DkimKeyPair {
  /** The `p=` value: base64 of the DER SubjectPublicKeyInfo (RSA) or of the raw 32-byte key (Ed25519). */
  publicKey: string;
  /** PKCS#8 PEM. */
  privateKeyPem: string;
}

export interface ParsedDkimRecord {
  /** The v= value when present (it is optional; "DKIM1" when given). */
  version?: string;
  /** k=, lower-cased; "rsa" when absent (RFC 6376 §3.6.1). */
  keyType: string;
  /** p= with all whitespace removed; empty when the key has been revoked. */
  publicKey: string;
}

// RFC 8301 §3.2: signers MUST use at least 1024 bits and SHOULD use 2048.
const RSA_BITS = 2048;

export function generateDkimKeyPair(algorithm: DkimAlgorithm): DkimKeyPair {
  if (algorithm === 'rsa') {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: RSA_BITS });
    return {
      publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    };
  }
  if (algorithm === 'ed25519') {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    // RFC 8463 §4.2: the record carries the bare 32-byte key, not a SubjectPublicKeyInfo.
    const jwk = publicKey.export({ format: 'jwk' });
    if (typeof jwk.x !== 'string') throw new Error('Ed25519 public key export lacks x');
    return {
      publicKey: Buffer.from(jwk.x, 'base64url').toString('base64'),
      privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    };
  }
  throw new Error(`unknown DKIM algorithm: ${String(algorithm)}`);
}

export function dkimRecordValue(algorithm: DkimAlgorithm, publicKey: string): string {
  return `v=DKIM1; k=${algorithm}; p=${publicKey}`;
}

const TAG_NAME = /^[A-Za-z][A-Za-z0-9_]*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reads a DKIM key record (a tag=value list, RFC 6376 §3.2): whitespace around tags and values and
 * inside p= is ignored, tags may come in any order. Returns null for anything that is not one:
 * a malformed or repeated tag, no p= tag, a p= that is not base64, a v= other than DKIM1.
 */
export function parseDkimRecord(txt: string): ParsedDkimRecord | null {
  const tags = new Map<string, string>();
  const parts = txt.split(';');
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    // A trailing semicolon leaves an empty last element, which the grammar allows.
    if (part.trim() === '') {
      if (i === parts.length - 1) continue;
      return null;
    }
    const eq = part.indexOf('=');
    if (eq < 0) return null;
    const name = part.slice(0, eq).trim();
    if (!TAG_NAME.test(name) || tags.has(name)) return null;
    tags.set(name, part.slice(eq + 1).trim());
  }
  const version = tags.get('v');
  if (version !== undefined && version !== 'DKIM1') return null;
  const p = tags.get('p');
  if (p === undefined) return null;
  const publicKey = p.replace(/\s+/g, '');
  if (!BASE64.test(publicKey)) return null;
  const keyType = (tags.get('k') ?? 'rsa').toLowerCase();
  return version === undefined ? { keyType, publicKey } : { version, keyType, publicKey };
}
