// The TLS certificate of Lacre's own listeners (SMTP submission): the operator's PEM files when
// configured, otherwise a self-signed EC P-256 certificate for the configured host name, generated
// on first start into the data dir (key mode 0600) and reused afterwards, so clients that pinned
// its fingerprint keep working across restarts. The SHA-256 fingerprint is what operators hand to
// clients that cannot verify a self-signed certificate any other way.
import { X509Certificate, randomBytes } from 'node:crypto';
import type { webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext as tlsSecureContext } from 'node:tls';
// @peculiar/x509 needs the Reflect metadata polyfill loaded before it.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { ConfigError } from '../config/load.ts';

x509.cryptoProvider.set(globalThis.crypto);

export interface ListenerCertificate {
  /** PEM: the leaf first, then any intermediates. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** SHA-256 of the leaf's DER, as `openssl x509 -fingerprint -sha256` prints it (AB:CD:…). */
  fingerprintSha256: string;
  /** configured: the operator's files; generated: made now; reused: generated on an earlier start. */
  source: 'configured' | 'generated' | 'reused';
  /** Why a new self-signed certificate replaced the one in the data dir, if it did. */
  replaced?: string;
  certPath: string;
  keyPath: string;
  subject: string;
  notAfter: Date;
}

export interface ListenerCertOptions {
  dataDir: string;
  /** The name the self-signed certificate is made for (the EHLO host name). */
  hostname: string;
  /** Operator's PEM files; both or neither. */
  certFile?: string;
  keyFile?: string;
  /** Which listener: names the files in the data dir (`tls/<name>-cert.pem`) and the settings in errors. */
  name?: string;
  /** The settings that name the files, for error messages. */
  settings?: { cert: string; key: string };
  now?: () => number;
}

const DAY = 86_400_000;
/** Long-lived: the fingerprint is what clients pin, and a new one breaks them. */
const SELF_SIGNED_DAYS = 5 * 365;
/** A certificate this close to expiry is replaced at start-up rather than left to fail. */
const RENEW_BEFORE_DAYS = 30;

export function fingerprintOf(certPem: string): { fingerprintSha256: string; subject: string; notAfter: Date; x509: X509Certificate } {
  const cert = new X509Certificate(certPem);
  return { fingerprintSha256: cert.fingerprint256, subject: cert.subject.replace(/\n/g, ', '), notAfter: new Date(cert.validTo), x509: cert };
}

export async function loadListenerCertificate(options: ListenerCertOptions): Promise<ListenerCertificate> {
  const name = options.name ?? 'submission';
  const now = options.now ?? Date.now;
  if (options.certFile !== undefined || options.keyFile !== undefined) return loadConfigured(options);

  const dir = join(options.dataDir, 'tls');
  const certPath = join(dir, `${name}-cert.pem`);
  const keyPath = join(dir, `${name}-key.pem`);
  let replaced: string | undefined;
  if (existsSync(certPath) && existsSync(keyPath)) {
    const mode = statSync(keyPath).mode & 0o777;
    // A key readable by others is a leaked key: refuse rather than quietly use it (as master.key).
    if (mode & 0o077) {
      throw new ConfigError(`${keyPath} is readable by other users (mode ${mode.toString(8)}); run: chmod 600 ${keyPath}`);
    }
    const cert = readFileSync(certPath, 'utf8');
    const key = readFileSync(keyPath, 'utf8');
    const info = fingerprintOf(cert);
    const covers = isIP(options.hostname) ? info.x509.checkIP(options.hostname) : info.x509.checkHost(options.hostname);
    if (info.notAfter.getTime() - now() < RENEW_BEFORE_DAYS * DAY) replaced = `it expires on ${info.notAfter.toISOString()}`;
    else if (!covers) replaced = `it is not for the host name ${options.hostname} (${info.subject})`;
    else if (!pairMatches(cert, key)) replaced = 'its key does not match it';
    else return { cert, key, ...pick(info), source: 'reused', certPath, keyPath };
  }

  const generated = await generateSelfSigned(options.hostname, now());
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Key first, each through a temporary file and a rename, so a crash never leaves a certificate
  // beside a key that is not its own.
  writeAtomically(keyPath, generated.key, 0o600);
  writeAtomically(certPath, generated.cert, 0o644);
  return { ...generated, ...pick(fingerprintOf(generated.cert)), source: 'generated', ...(replaced ? { replaced } : {}), certPath, keyPath };
}

function pick(info: ReturnType<typeof fingerprintOf>) {
  return { fingerprintSha256: info.fingerprintSha256, subject: info.subject, notAfter: info.notAfter };
}

function loadConfigured(options: ListenerCertOptions): ListenerCertificate {
  const settings = options.settings ?? { cert: 'LACRE_SUBMISSION_TLS_CERT', key: 'LACRE_SUBMISSION_TLS_KEY' };
  if (options.certFile === undefined || options.keyFile === undefined) {
    throw new ConfigError(`${settings.cert} and ${settings.key} go together: set both, or neither for a generated self-signed certificate`);
  }
  const read = (path: string, setting: string, marker: RegExp, what: string) => {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ConfigError(`${setting} = ${JSON.stringify(path)}: ${(err as Error).message}`);
    }
    if (!marker.test(text)) throw new ConfigError(`${setting} = ${JSON.stringify(path)}: no PEM ${what} in it`);
    return text;
  };
  const cert = read(options.certFile, settings.cert, /-----BEGIN CERTIFICATE-----/, 'certificate');
  const key = read(options.keyFile, settings.key, /-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'private key');
  let info: ReturnType<typeof fingerprintOf>;
  try {
    info = fingerprintOf(cert);
  } catch (err) {
    throw new ConfigError(`${settings.cert} = ${JSON.stringify(options.certFile)}: not a readable certificate (${(err as Error).message})`);
  }
  if (!pairMatches(cert, key)) {
    throw new ConfigError(`${settings.key} = ${JSON.stringify(options.keyFile)} is not the private key of the certificate in ${settings.cert}`);
  }
  return { cert, key, ...pick(info), source: 'configured', certPath: options.certFile, keyPath: options.keyFile };
}

/** Whether OpenSSL accepts the key as the certificate's (it checks they belong together). */
function pairMatches(cert: string, key: string): boolean {
  try {
    tlsSecureContext({ cert, key });
    return true;
  } catch {
    return false;
  }
}

function writeAtomically(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(tmp, text, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

type CryptoKeyPair = webcrypto.CryptoKeyPair;

async function generateSelfSigned(hostname: string, now: number): Promise<{ cert: string; key: string }> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256' };
  const signing = { name: 'ECDSA', hash: 'SHA-256' };
  const keys = (await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as CryptoKeyPair;
  const serial = randomBytes(16);
  // Positive and non-zero, as RFC 5280 §4.1.2.2 requires.
  serial[0] = (serial[0] & 0x7f) | 0x01;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name: `CN=${hostname}`,
    // Back-dated an hour so a client whose clock is a little behind does not see "not yet valid".
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + SELF_SIGNED_DAYS * DAY),
    keys,
    signingAlgorithm: signing,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: isIP(hostname) ? 'ip' : 'dns', value: hostname }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '');
  return { cert: `${cert.toString('pem')}\n`, key: `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n` };
}
