// Test certificate authority: owns a throwaway root key and issues leaf certificates on demand
// (valid, expired, not yet valid, self-signed, or behind an intermediate) so TLS paths can be
// exercised on loopback. The service is pointed at the root through its normal extra-CA option.
import { createHash, randomBytes } from 'node:crypto';
import type { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
// @peculiar/x509 needs the Reflect metadata polyfill loaded first (through tsyringe).
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { Extension, JsonGeneralName, X509Certificate } from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

export interface IssuedCert {
  certPem: string;
  /** PKCS#8 PEM */
  keyPem: string;
  /** Leaf followed by any intermediates, for a server's `cert` option. */
  chainPem: string;
  /** Lowercase hex SHA-256 of the leaf DER. */
  fingerprintSha256: string;
  /** Lowercase hex SHA-256 of the leaf SubjectPublicKeyInfo DER (TLSA selector 1, matching type 1). */
  spkiSha256: string;
  certDer: Buffer;
  notBefore: Date;
  notAfter: Date;
}

export type CertKind = 'valid' | 'expired' | 'not-yet-valid' | 'self-signed' | 'intermediate-chain';
export type KeyType = 'ec' | 'rsa';

export interface IssueOptions {
  names: string[];
  kind?: CertKind;
  keyType?: KeyType;
}

const DAY = 24 * 60 * 60 * 1000;

// The project compiles without the DOM lib, so WebCrypto types come from Node's namespace.
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;
type EcKeyGenParams = webcrypto.EcKeyGenParams;
type RsaHashedKeyGenParams = webcrypto.RsaHashedKeyGenParams;

const EC_KEY: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const EC_SIGN: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const RSA_KEY: RsaHashedKeyGenParams = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
};

function generateKeys(keyType: KeyType): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(keyType === 'rsa' ? RSA_KEY : EC_KEY, true, ['sign', 'verify']);
}

function signingAlgorithm(keys: CryptoKeyPair): Algorithm | EcdsaParams {
  return keys.privateKey.algorithm.name === 'ECDSA' ? EC_SIGN : RSA_KEY;
}

// A positive, unique serial: OpenSSL rejects negative serials and identical issuer+serial pairs
// confuse chain building when many certificates come from the same CA.
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  bytes[0] |= 0x01;
  return bytes.toString('hex');
}

// Distinguished names are written as strings; commas or equals signs in a test name would
// otherwise be parsed as extra RDNs.
function cn(name: string): string {
  return `CN=${name.replace(/([,+="\\<>;#])/g, '\\$1')}`;
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', key));
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

function pem(cert: X509Certificate): string {
  return cert.toString('pem') + '\n';
}

interface Authority {
  cert: X509Certificate;
  keys: CryptoKeyPair;
}

export class TestCA {
  /** The root certificate, for `ca:` options and LACRE_CA_FILE. */
  readonly certPem: string;
  readonly #root: Authority;
  // One intermediate is enough to prove chain handling; creating it lazily keeps plain issuance fast.
  #intermediate: Promise<Authority> | undefined;

  private constructor(root: Authority) {
    this.#root = root;
    this.certPem = pem(root.cert);
  }

  static async create(opts: { commonName?: string } = {}): Promise<TestCA> {
    const keys = await generateKeys('ec');
    const now = Date.now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      name: cn(opts.commonName ?? 'Lacre Test Root CA'),
      // Back-dated so that clock skew between issuing and verifying never makes the root "not yet valid".
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 3650 * DAY),
      keys,
      signingAlgorithm: EC_SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new TestCA({ cert, keys });
  }

  async issue(opts: IssueOptions): Promise<IssuedCert> {
    const names = opts.names;
    if (names.length === 0) throw new Error('issue() needs at least one name');
    const kind = opts.kind ?? 'valid';
    const keys = await generateKeys(opts.keyType ?? 'ec');
    const now = Date.now();
    let notBefore = new Date(now - DAY);
    let notAfter = new Date(now + 90 * DAY);
    if (kind === 'expired') {
      notBefore = new Date(now - 30 * DAY);
      notAfter = new Date(now - DAY);
    } else if (kind === 'not-yet-valid') {
      notBefore = new Date(now + DAY);
      notAfter = new Date(now + 30 * DAY);
    }

    const rsa = keys.privateKey.algorithm.name !== 'ECDSA';
    const extensions: Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | (rsa ? x509.KeyUsageFlags.keyEncipherment : 0),
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => ({ type: isIP(n) ? 'ip' : 'dns', value: n }) as JsonGeneralName),
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ];

    let cert: X509Certificate;
    const intermediates: X509Certificate[] = [];
    if (kind === 'self-signed') {
      cert = await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber: serialNumber(),
        name: cn(names[0]),
        notBefore,
        notAfter,
        keys,
        signingAlgorithm: signingAlgorithm(keys),
        extensions,
      });
    } else {
      const issuer = kind === 'intermediate-chain' ? await this.#getIntermediate() : this.#root;
      if (issuer !== this.#root) intermediates.push(issuer.cert);
      extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
      cert = await x509.X509CertificateGenerator.create({
        serialNumber: serialNumber(),
        subject: cn(names[0]),
        issuer: issuer.cert.subject,
        notBefore,
        notAfter,
        publicKey: keys.publicKey,
        signingKey: issuer.keys.privateKey,
        signingAlgorithm: signingAlgorithm(issuer.keys),
        extensions,
      });
    }

    const certDer = Buffer.from(cert.rawData);
    const spkiDer = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
    const certPem = pem(cert);
    return {
      certPem,
      keyPem: await exportKeyPem(keys.privateKey),
      chainPem: certPem + intermediates.map(pem).join(''),
      fingerprintSha256: createHash('sha256').update(certDer).digest('hex'),
      spkiSha256: createHash('sha256').update(spkiDer).digest('hex'),
      certDer,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    };
  }

  /** Writes the root PEM into `dir` and returns its path. */
  async writeCaFile(dir: string): Promise<string> {
    const path = join(dir, 'lacre-test-ca.pem');
    await writeFile(path, this.certPem);
    return path;
  }

  #getIntermediate(): Promise<Authority> {
    this.#intermediate ??= (async () => {
      const keys = await generateKeys('ec');
      const now = Date.now();
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serialNumber(),
        subject: cn('Lacre Test Intermediate CA'),
        issuer: this.#root.cert.subject,
        notBefore: new Date(now - DAY),
        notAfter: new Date(now + 3650 * DAY),
        publicKey: keys.publicKey,
        signingKey: this.#root.keys.privateKey,
        signingAlgorithm: EC_SIGN,
        extensions: [
          new x509.BasicConstraintsExtension(true, 0, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
          await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
          await x509.AuthorityKeyIdentifierExtension.create(this.#root.keys.publicKey),
        ],
      });
      return { cert, keys };
    })();
    return this.#intermediate;
  }
}
