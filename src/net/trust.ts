// net/ owns what every outbound TLS connection shares: which certificates are trusted, the TLS
// floor, and the pinned-address HTTPS client.
//
// This file: the one trust store. A TLS client that passes `ca` replaces Node's default roots, so
// the roots are put back here once: Node's bundled Mozilla set (`tls.getCACertificates('default')`,
// which also holds NODE_EXTRA_CA_CERTS) plus the system store (`'system'`, Node 22.15+/24) plus the
// operator's extra PEMs from LACRE_CA_FILE (tls.caFile). Every context built here carries the
// floor, TLS 1.2 (RFC 8996 deprecates 1.0 and 1.1; RFC 8461 §3.3 and RFC 8460 §5.4 want HTTPS as
// the web does it), so no caller can forget it: a `secureContext` given to tls.connect wins over
// any `minVersion` passed beside it.
//
// The CA file is read once per process, when `lacre serve` (or a command) starts, not per
// connection keyed by path + mtime: the PEMs travel by value to the delivery thread (worker data),
// a broken file stops the start with a config error instead of failing the first delivery, every
// other setting is read once too (a change needs a restart, as Postfix's `postfix reload` does),
// and no connection pays a stat(). Contexts are cached by the PEMs they add, since building one
// parses every root (~150) and each SMTP connection, webhook POST and policy fetch needs one.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { MIN_TLS_VERSION } from '../tls-policy/levels.ts';

export { MIN_TLS_VERSION };

/**
 * The PEM certificates of an extra-CA file (LACRE_CA_FILE), read now. Throws with the reason when
 * the file cannot be read or holds no PEM certificate; the caller names the setting.
 */
export function readCaFile(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (!pems) throw new Error('no PEM certificate in it');
  return pems.map((pem) => `${pem}\n`);
}

let defaultRoots: readonly string[] | undefined;

/** Node's bundled roots plus the system store, read once per process. */
export function defaultTrustedRoots(): readonly string[] {
  if (!defaultRoots) {
    const set = new Set<string>(tls.getCACertificates('default'));
    try {
      for (const pem of tls.getCACertificates('system')) set.add(pem);
    } catch {
      // No readable system store on this platform: the bundled Mozilla roots remain.
    }
    defaultRoots = [...set];
  }
  return defaultRoots;
}

// One process has one CA file, so one entry in production; tests bring a CA each. Bounded, and the
// oldest goes first, so a caller cycling through CAs never rebuilds the ones still in use.
const MAX_CONTEXTS = 16;
const contexts = new Map<string, tls.SecureContext>();

/**
 * The client context every outbound TLS connection uses: the default roots plus `extra`, never
 * below TLS 1.2. The same `extra` gives the same context object.
 */
export function trustedContext(extra: readonly string[] = []): tls.SecureContext {
  const key = extra.join('\n');
  let ctx = contexts.get(key);
  if (ctx) {
    // Most recently used last, so eviction takes the least recently used.
    contexts.delete(key);
    contexts.set(key, ctx);
    return ctx;
  }
  ctx = tls.createSecureContext({ ca: [...defaultTrustedRoots(), ...extra], minVersion: MIN_TLS_VERSION });
  while (contexts.size >= MAX_CONTEXTS) contexts.delete(contexts.keys().next().value!);
  contexts.set(key, ctx);
  return ctx;
}
