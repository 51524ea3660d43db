// The HTTP listener (fastify): GET /livez and GET /healthz (readiness, decided in health.ts) here; the APIs mount through their own route modules,
// which inherit the guard and the error shape of http-errors.ts from this root instance.
// HTTPS (TLS 1.2 or later) when given a certificate; plain HTTP only on a loopback address, where
// nothing but the machine itself can see the API keys that HTTP Basic auth sends in the clear.
import { isIP } from 'node:net';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Logger } from '../log/logger.ts';
import { ConfigError } from '../config/load.ts';
import type { ApiKeys } from '../access/api-keys.ts';
import { frameworkErrors, installHttpConventions } from './http-errors.ts';
import type { Readiness } from './health.ts';

export interface HttpState {
  /** False while starting or shutting down: load balancers should route elsewhere. */
  ready: boolean;
  /** The rest of readiness (store, keyring, queue worker); serve sets it once they run. */
  readiness?: () => Promise<Readiness>;
}

/** PEM certificate chain and private key of the HTTPS listener. */
export interface HttpsOptions {
  cert: string | Buffer;
  key: string | Buffer;
}

/** `keys` authenticates every route that is not public; without it only public routes register. */
export function buildHttpServer(options: { logger: Logger; state: HttpState; https?: HttpsOptions; keys?: ApiKeys }): FastifyInstance {
  const common = {
    frameworkErrors,
    loggerInstance: options.logger.child({ component: 'http' }),
    // Per-request lines would carry URLs and client IPs: personal data with no operational need.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
  };
  // One app type for both: routes use only what HTTP and HTTPS servers share.
  const app = (
    options.https
      ? Fastify({ ...common, https: { cert: options.https.cert, key: options.https.key, minVersion: 'TLSv1.2' } })
      : Fastify(common)
  ) as unknown as FastifyInstance;
  installHttpConventions(app, { keys: options.keys });
  // Liveness: the event loop answers. A failing part is readiness's business, not a reason to restart.
  app.get('/livez', { config: { scope: 'public' } }, async () => ({ status: 'ok' }));
  // Readiness: 503 naming every failing check. Public like any load balancer probe: it says which
  // part is unwell, never anything about mail.
  app.get('/healthz', { config: { scope: 'public' } }, async (_request, reply) => {
    if (!options.state.ready) return reply.code(503).send({ status: 'unavailable', checks: { serving: 'starting or shutting down' } });
    if (!options.state.readiness) return { status: 'ok' };
    const { ready, checks } = await options.state.readiness();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ok' : 'unavailable', checks });
  });
  return app;
}

/** 127.0.0.0/8, ::1, IPv4-mapped 127.x.y.z, and `localhost` (RFC 6761 §6.3: always loopback). */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.split('.')[0] === '127';
  if (isIP(h) !== 6) return false;
  // The URL parser writes IPv6 addresses in their shortest form (RFC 5952), mapped IPv4 in hex.
  const canonical = new URL(`http://[${h}]/`).hostname.slice(1, -1);
  if (canonical === '::1') return true;
  const mapped = /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(canonical);
  return mapped !== null && parseInt(mapped[1], 16) >> 8 === 127;
}

/**
 * Refuses a listener that would take API keys in the clear from the network: without TLS the HTTP
 * API may listen on a loopback address only (behind a TLS-terminating proxy on the same machine).
 */
export function checkHttpBind(host: string, tls: boolean): void {
  if (tls || isLoopbackHost(host)) return;
  throw new ConfigError(
    `LACRE_HTTP_HOST (http.host) = ${JSON.stringify(host)} is not a loopback address, and plain HTTP would carry API keys ` +
      'in the clear: set LACRE_HTTP_TLS_CERT and LACRE_HTTP_TLS_KEY (http.tlsCert, http.tlsKey) to PEM files for HTTPS, ' +
      'or listen on 127.0.0.1 or ::1 behind a TLS-terminating proxy',
  );
}
