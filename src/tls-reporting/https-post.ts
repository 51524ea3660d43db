// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports. May import: ../tls-policy (types), ../dns, ../store, ../compose (types), node
// built-ins, nodemailer.
//
// This file: a report POSTed to an `https:` rua (RFC 8460 §5.4). The receiver's certificate must
// chain to a trusted root (PKIX, the bundled and system roots plus the operator's extra CAs) and
// name the URL's host; TLS 1.2 at least (RFC 8996); redirects are not followed (a 3xx is a failed
// attempt); the connection goes to an address vetted beforehand, so DNS cannot swap it afterwards.
import * as https from 'node:https';
import * as tls from 'node:tls';
import { isIP, type LookupFunction } from 'node:net';
import { TLSRPT_GZIP } from './mail.ts';

/** Where an https rua may be reached: the URL's host and the addresses allowed for it. */
export interface HttpsTarget {
  /** The host as written in the URL, without brackets: the TLS server name and Host header. */
  host: string;
  /** Addresses vetted for the host (public ones only, in production); the first is used. */
  addresses: string[];
}

export interface PostOptions {
  ca: string[];
  timeoutMs: number;
  userAgent?: string;
}

/** Resolves with the HTTP status; the response body is read and dropped. */
export function postReport(url: URL, target: HttpsTarget, gz: Buffer, options: PostOptions): Promise<number> {
  const address = target.addresses[0];
  if (url.protocol !== 'https:') return Promise.reject(new Error('only https: URLs take reports'));
  if (!address) return Promise.reject(new Error(`no address to reach ${target.host}`));
  const family = isIP(address);
  if (family === 0) return Promise.reject(new Error(`"${address}" is not an IP address`));
  const lookup: LookupFunction = (_hostname, opts, callback) => {
    if ((opts as { all?: boolean }).all) (callback as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address, family }]);
    else callback(null, address, family);
  };
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const settle = (err: Error | null, status?: number) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(status!);
    };
    const request = https.request({
      method: 'POST',
      host: target.host,
      port: url.port ? Number(url.port) : 443,
      path: `${url.pathname}${url.search}`,
      headers: {
        host: url.host,
        'content-type': TLSRPT_GZIP,
        'content-length': String(gz.length),
        ...(options.userAgent ? { 'user-agent': options.userAgent } : {}),
      },
      lookup,
      // No pooling: each request goes to the address vetted for it.
      agent: false,
      // SNI carries names only (RFC 6066 §3).
      servername: isIP(target.host) ? undefined : target.host,
      minVersion: 'TLSv1.2',
      // Request options reach tls.connect, which takes a prepared context (typed there only).
      ...({ secureContext: secureContext(options.ca) } as https.RequestOptions),
    });
    const timer = setTimeout(() => request.destroy(new Error(`no complete answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    timer.unref();
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      response.resume();
      response.on('end', () => settle(null, status));
      response.on('error', (err) => settle(err));
      response.on('close', () => settle(new Error('the connection closed before the answer was complete')));
    });
    request.on('error', (err) => settle(err));
    request.on('close', () => settle(new Error('the connection closed without an answer')));
    request.end(gz);
  });
}

let defaultCas: string[] | undefined;

// Passing `ca` replaces Node's default store, so the bundled and system roots are added back.
function trustedCas(): string[] {
  if (!defaultCas) {
    const set = new Set<string>(tls.getCACertificates('default'));
    try {
      for (const pem of tls.getCACertificates('system')) set.add(pem);
    } catch {
      // No readable system store on this platform: the bundled roots remain.
    }
    defaultCas = [...set];
  }
  return defaultCas;
}

const contexts = new Map<string, tls.SecureContext>();

function secureContext(extra: string[]): tls.SecureContext {
  const key = extra.join('\n');
  let ctx = contexts.get(key);
  if (!ctx) {
    ctx = tls.createSecureContext({ ca: [...trustedCas(), ...extra], minVersion: 'TLSv1.2' });
    if (contexts.size > 8) contexts.clear();
    contexts.set(key, ctx);
  }
  return ctx;
}
