// The HTTP listener (fastify). This surface is operational only: GET /healthz. The send
// API and the rest mount here later through their own route modules.
import Fastify, { LogController } from 'fastify';
import type { Logger } from '../log/logger.ts';

export interface HttpState {
  /** False while starting or shutting down: load balancers should route elsewhere. */
  ready: boolean;
}

export function buildHttpServer(options: { logger: Logger; state: HttpState }) {
  const app = Fastify({
    loggerInstance: options.logger.child({ component: 'http' }),
    // Per-request lines would carry URLs and client IPs: personal data with no operational need.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
  });
  app.get('/healthz', async (_request, reply) => {
    if (!options.state.ready) return reply.code(503).send({ status: 'unavailable' });
    return { status: 'ok' };
  });
  return app;
}
