// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports.
//
// This file: a report POSTed to an `https:` rua (RFC 8460 §5.4). The receiver's certificate must
// chain to a trusted root (PKIX, the bundled and system roots plus the operator's extra CAs) and
// name the URL's host; TLS 1.2 at least (RFC 8996); redirects are not followed (a 3xx is a failed
// attempt); the connection goes to an address vetted beforehand, so DNS cannot swap it afterwards.
import { pinnedRequest } from '../net/https-client.ts';
import { TLSRPT_GZIP } from './mail.ts';

/** Where an https rua may be reached: the URL's host and the addresses allowed for it. */
export interface HttpsTarget {
  /** The host as written in the URL, without brackets: the TLS server name and Host header. */
  host: string;
  /** Addresses vetted for the host (public ones only, in production); the first is used. */
  addresses: string[];
}

// The answer's body means nothing to a report's sender; a receiver sending more than this is cut off.
const MAX_ANSWER_BYTES = 1024 * 1024;

export interface PostOptions {
  ca: string[];
  timeoutMs: number;
  userAgent?: string;
}

/** Resolves with the HTTP status; the response body is read (bounded) and dropped. */
export async function postReport(url: URL, target: HttpsTarget, gz: Buffer, options: PostOptions): Promise<number> {
  const address = target.addresses[0];
  if (url.protocol !== 'https:') throw new Error('only https: URLs take reports');
  if (!address) throw new Error(`no address to reach ${target.host}`);
  const response = await pinnedRequest(
    { host: target.host, address, port: url.port ? Number(url.port) : 443 },
    {
      method: 'POST',
      path: `${url.pathname}${url.search}`,
      headers: {
        'content-type': TLSRPT_GZIP,
        ...(options.userAgent ? { 'user-agent': options.userAgent } : {}),
      },
      body: gz,
      ca: options.ca,
      timeoutMs: options.timeoutMs,
      maxBodyBytes: MAX_ANSWER_BYTES,
      discardBody: true,
    },
  );
  return response.status;
}
