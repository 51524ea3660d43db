// net/ owns what every outbound TLS connection shares (see trust.ts).
//
// This file: the one pinned-address HTTPS client, used by webhooks (POST), TLS-RPT (POST, RFC 8460
// §5.4) and the MTA-STS policy fetch (GET, RFC 8461 §3.3). The caller resolves the host and checks
// the address (SSRF rules, Lacre's own resolver); the client then connects to that address only, so
// DNS cannot swap it afterwards (rebinding), while SNI (RFC 6066 §3: names only) and the
// certificate check use the host name, against the one trust store, TLS 1.2 at least. One deadline
// covers connect to the last body byte; the body is bounded; there is no connection pooling
// (nothing verified for one request is reused by another) and no redirect is ever followed: a 3xx
// comes back as a response, Location and all, and a caller that wants to follow one vets the new
// target and makes a new request.
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { trustedContext } from './trust.ts';

export interface PinnedTarget {
  /** The URL's host, without brackets: the TLS server name, the certificate's name, the Host header. */
  host: string;
  /** The address resolved and checked for `host` beforehand; the only one connected to. */
  address: string;
  port: number;
  /** Plain HTTP; only for a receiver the caller has vetted as loopback. Default https. */
  scheme?: 'https' | 'http';
}

export interface PinnedRequestOptions {
  method: 'GET' | 'POST';
  /** Path and query. */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
  /** Extra trusted roots (LACRE_CA_FILE), beside the default ones. */
  ca?: readonly string[];
  /** Connect to last body byte. */
  timeoutMs: number;
  /** The most body bytes taken; more fails the request with ResponseTooLargeError. */
  maxBodyBytes: number;
  /** Read the body and drop it (it is still bounded by maxBodyBytes). */
  discardBody?: boolean;
  signal?: AbortSignal;
  /** Sees the status and headers before the body is read; throwing refuses the response with that error. */
  checkHead?: (head: { status: number; headers: IncomingHttpHeaders }) => void;
}

export interface PinnedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  /** Empty when discardBody was set. */
  body: Buffer;
}

export class ResponseTooLargeError extends Error {
  override name = 'ResponseTooLargeError';
  readonly limit: number;
  constructor(limit: number) {
    super(`the response body is larger than ${limit} bytes`);
    this.limit = limit;
  }
}

/** One request to a pinned address. Rejects on transport, TLS, timeout, size and checkHead errors; any status resolves. */
export function pinnedRequest(target: PinnedTarget, options: PinnedRequestOptions): Promise<PinnedResponse> {
  const { host, address, port } = target;
  const scheme = target.scheme ?? 'https';
  if (isIP(address) === 0) return Promise.reject(new Error(`"${address}" is not an IP address`));
  const defaultPort = scheme === 'https' ? 443 : 80;
  const hostHeader = `${isIP(host) === 6 ? `[${host}]` : host}${port === defaultPort ? '' : `:${port}`}`;
  const headers: Record<string, string> = { ...options.headers, host: hostHeader };
  if (options.body) headers['content-length'] = String(options.body.length);
  const common: http.RequestOptions = {
    method: options.method,
    // An address literal: no lookup happens, the system resolver is never asked.
    host: address,
    port,
    path: options.path,
    headers,
    // A fresh connection per request: nothing verified under other options is ever reused.
    agent: false,
    signal: options.signal,
  };
  return new Promise<PinnedResponse>((resolve, reject) => {
    let settled = false;
    const settle = (err: Error | null, response?: PinnedResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        request.destroy();
        reject(err);
      } else resolve(response!);
    };
    const request =
      scheme === 'https'
        ? https.request({
            ...common,
            // SNI carries names only (RFC 6066 §3); without it the check is against the address.
            servername: isIP(host) ? '' : host,
            rejectUnauthorized: true,
            // Request options reach tls.connect, which takes a prepared context (typed there only).
            ...({ secureContext: trustedContext(options.ca) } as https.RequestOptions),
          })
        : http.request(common);
    const timer = setTimeout(() => settle(new Error(`no complete answer within ${options.timeoutMs} ms`)), options.timeoutMs);
    timer.unref();
    request.on('response', (response) => {
      const status = response.statusCode ?? 0;
      try {
        options.checkHead?.({ status, headers: response.headers });
      } catch (err) {
        return settle(err as Error);
      }
      const limit = options.maxBodyBytes;
      if (Number(response.headers['content-length']) > limit) return settle(new ResponseTooLargeError(limit));
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > limit) return settle(new ResponseTooLargeError(limit));
        if (!options.discardBody) chunks.push(chunk);
      });
      response.on('end', () => {
        if (!response.complete) return settle(new Error('the connection closed before the answer was complete'));
        settle(null, { status, headers: response.headers, body: options.discardBody ? Buffer.alloc(0) : Buffer.concat(chunks, size) });
      });
      response.on('error', (err) => settle(err));
      response.on('close', () => settle(new Error('the connection closed before the answer was complete')));
    });
    request.on('error', (err) => settle(err));
    request.on('close', () => settle(new Error('the connection closed without an answer')));
    request.end(options.body);
  });
}
