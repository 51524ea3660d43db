// HTTPS server for MTA-STS policy fetches in tests: owns one loopback listener that serves
// /.well-known/mta-sts.txt for any number of `mta-sts.<domain>` hosts, each scripted with its own
// body, status, content type, redirect, delay and certificate (chosen by SNI, so one host can
// present an expired or wrong-name certificate while its neighbours are fine).
import * as https from 'node:https';
import * as tls from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { CertKind, IssuedCert, KeyType, TestCA } from './ca.ts';

export const MTA_STS_PATH = '/.well-known/mta-sts.txt';

export interface PolicyHostScript {
  /** Response body; empty if unset. */
  body?: string;
  /** Defaults to 301 with a redirect, else 200 with a body, else 404. */
  status?: number;
  /** Defaults to text/plain. */
  contentType?: string;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /** Location to redirect to (RFC 8461 forbids following it; this lets tests check that). */
  redirect?: string;
  /** Wait this long before sending the response headers. */
  delayMs?: number;
  /** Defaults to 'valid'. */
  cert?: CertKind;
  /** Names on the certificate; defaults to the host itself. Any other name makes a wrong-name cert. */
  certNames?: string[];
  keyType?: KeyType;
}

export interface HttpsRequestLogEntry {
  /** Host header, without port, lowercased. */
  host: string;
  /** SNI name the client sent, or null without SNI. */
  servername: string | null;
  method: string;
  path: string;
  status: number;
  at: Date;
}

export interface MtaStsHttpsServerOptions {
  ca: TestCA;
  host?: string;
  /** 0 (default) picks a free port. The real MTA-STS fetch goes to 443. */
  port?: number;
  /** Speak TLS 1.0 and 1.1 only (a legacy host), so clients can be shown to refuse it. */
  legacyTls?: boolean;
}

// SECLEVEL=0 lets OpenSSL 3 offer the old protocols at all.
const LEGACY_TLS = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;

/** Formats an RFC 8461 policy body, with the CRLF line endings the RFC specifies. */
export function formatMtaStsPolicy(policy: {
  mode: 'enforce' | 'testing' | 'none';
  mx: string[];
  maxAge: number;
  version?: string;
}): string {
  const lines = [`version: ${policy.version ?? 'STSv1'}`, `mode: ${policy.mode}`];
  for (const mx of policy.mx) lines.push(`mx: ${mx}`);
  lines.push(`max_age: ${policy.maxAge}`);
  return lines.map((l) => `${l}\r\n`).join('');
}

interface HostEntry {
  script: PolicyHostScript;
  cert: IssuedCert;
  context: tls.SecureContext;
  certKey: string;
}

// Served to SNI names nobody scripted: like a shared web host that has no vhost for the name, it
// presents a certificate for some other name, so clients fail the name check.
const DEFAULT_CERT_NAME = 'default.lacre-https.test';

function normalizeHost(host: string): string {
  return host.replace(/\.$/, '').toLowerCase();
}

function hostHeader(req: IncomingMessage): string {
  const raw = req.headers.host ?? '';
  // Strip a port, keeping bracketed IPv6 literals intact.
  const host = raw.startsWith('[') ? raw.slice(0, raw.indexOf(']') + 1) : raw.replace(/:\d+$/, '');
  return normalizeHost(host);
}

function contextFor(cert: IssuedCert, legacyTls: boolean): tls.SecureContext {
  return tls.createSecureContext({ key: cert.keyPem, cert: cert.chainPem, ...(legacyTls ? LEGACY_TLS : { minVersion: 'TLSv1.2' }) });
}

export class MtaStsHttpsServer {
  readonly host: string;
  readonly requests: HttpsRequestLogEntry[] = [];
  /** The certificate presented to clients whose SNI names no scripted host. */
  readonly defaultCert: IssuedCert;

  readonly #ca: TestCA;
  readonly #legacyTls: boolean;
  readonly #server: https.Server;
  readonly #hosts = new Map<string, HostEntry>();
  readonly #timers = new Set<NodeJS.Timeout>();
  // Raw sockets, including ones still in the TLS handshake that closeAllConnections() does not see.
  readonly #sockets = new Set<Socket>();
  #port = 0;
  #closed: Promise<void> | undefined;

  private constructor(ca: TestCA, defaultCert: IssuedCert, host: string, legacyTls: boolean) {
    this.#ca = ca;
    this.#legacyTls = legacyTls;
    this.defaultCert = defaultCert;
    this.host = host;
    this.#server = https.createServer({
      key: defaultCert.keyPem,
      cert: defaultCert.chainPem,
      ...(legacyTls ? LEGACY_TLS : { minVersion: 'TLSv1.2' }),
      SNICallback: (servername, cb) => cb(null, this.#contextForSni(servername)),
    });
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res));
    // Clients rejecting our deliberately bad certificates abort handshakes; that is the point.
    this.#server.on('tlsClientError', () => {});
    this.#server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
  }

  static async start(opts: MtaStsHttpsServerOptions): Promise<MtaStsHttpsServer> {
    const defaultCert = await opts.ca.issue({ names: [DEFAULT_CERT_NAME] });
    const self = new MtaStsHttpsServer(opts.ca, defaultCert, opts.host ?? '127.0.0.1', opts.legacyTls ?? false);
    await new Promise<void>((resolve, reject) => {
      self.#server.once('error', reject);
      self.#server.listen(opts.port ?? 0, self.host, () => {
        self.#server.off('error', reject);
        resolve();
      });
    });
    self.#port = (self.#server.address() as AddressInfo).port;
    return self;
  }

  get port(): number {
    return this.#port;
  }

  /** Resolves when the next TCP connection is accepted (before any TLS): call it before connecting. */
  nextConnection(): Promise<void> {
    return new Promise((resolve) => this.#server.once('connection', () => resolve()));
  }

  /** Scripts `hostname` (e.g. "mta-sts.example.test"), issuing its certificate if needed. */
  async setHost(hostname: string, script: PolicyHostScript): Promise<IssuedCert> {
    const key = normalizeHost(hostname);
    const kind = script.cert ?? 'valid';
    const names = script.certNames ?? [key];
    const keyType = script.keyType ?? 'ec';
    const certKey = `${kind}|${keyType}|${names.join(',')}`;
    const existing = this.#hosts.get(key);
    if (existing && existing.certKey === certKey) {
      existing.script = script;
      return existing.cert;
    }
    const cert = await this.#ca.issue({ names, kind, keyType });
    this.#hosts.set(key, { script, cert, context: contextFor(cert, this.#legacyTls), certKey });
    return cert;
  }

  /** Scripts the policy host of `domain`, i.e. mta-sts.<domain>. */
  setPolicy(domain: string, script: PolicyHostScript): Promise<IssuedCert> {
    return this.setHost(`mta-sts.${normalizeHost(domain)}`, script);
  }

  removeHost(hostname: string): void {
    this.#hosts.delete(normalizeHost(hostname));
  }

  /** The certificate `hostname` presents, if scripted. */
  certificate(hostname: string): IssuedCert | undefined {
    return this.#hosts.get(normalizeHost(hostname))?.cert;
  }

  /** Forgets every host and the request log. */
  reset(): void {
    this.#hosts.clear();
    this.requests.length = 0;
  }

  /** Stops listening and cuts every open connection, pending delayed responses included. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      for (const timer of this.#timers) clearTimeout(timer);
      this.#timers.clear();
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
      for (const socket of this.#sockets) socket.destroy();
    });
    return this.#closed;
  }

  #contextForSni(servername: string): tls.SecureContext | undefined {
    // undefined falls back to the server's default certificate.
    return this.#hosts.get(normalizeHost(servername))?.context;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const host = hostHeader(req);
    const path = (req.url ?? '/').split('?')[0];
    const sni = (req.socket as tls.TLSSocket).servername;
    const entry: HttpsRequestLogEntry = {
      host,
      servername: typeof sni === 'string' ? sni : null,
      method: req.method ?? 'GET',
      path,
      status: 0,
      at: new Date(),
    };
    this.requests.push(entry);

    // Routing follows the Host header, as virtual hosting does; the SNI only picked the certificate.
    const script = this.#hosts.get(host)?.script;
    const respond = () => {
      if (res.destroyed) return;
      let status = 404;
      let body = 'not found\n';
      const headers: Record<string, string> = {};
      if (script && path === MTA_STS_PATH && (req.method === 'GET' || req.method === 'HEAD')) {
        status = script.status ?? (script.redirect !== undefined ? 301 : script.body !== undefined ? 200 : 404);
        body = script.body ?? '';
        if (script.redirect !== undefined) headers.location = script.redirect;
        headers['content-type'] = script.contentType ?? 'text/plain';
        Object.assign(headers, script.headers);
      }
      headers['content-type'] ??= 'text/plain';
      headers['content-length'] = String(Buffer.byteLength(body));
      entry.status = status;
      res.writeHead(status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    };

    const delay = script?.delayMs ?? 0;
    if (delay <= 0) {
      respond();
      return;
    }
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      respond();
    }, delay);
    this.#timers.add(timer);
    res.on('close', () => {
      clearTimeout(timer);
      this.#timers.delete(timer);
    });
  }
}
