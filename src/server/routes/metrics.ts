// `GET /metrics`: Prometheus text format (server/metrics.ts holds the metrics, docs/metrics.md
// names them). A key with `read` or `admin` scope: a scrape reveals traffic volumes, which are
// an operator's business (Prometheus sends it with `basic_auth` in its scrape config).
// Part of server/ (the wiring).
import type { FastifyPluginAsync } from 'fastify';
import type { IntakeMetrics, MetricsJson } from '../metrics.ts';

export interface MetricsDeps {
  intake: IntakeMetrics;
  /** The delivery thread's metrics, or null when it did not answer (the scrape still answers). */
  delivery: () => Promise<MetricsJson | null>;
}

export function metricsRoutes(deps: MetricsDeps): FastifyPluginAsync {
  return async (app) => {
    app.get('/metrics', { config: { scope: ['read', 'admin'] } }, async (_request, reply) => {
      const { contentType, text } = await deps.intake.render(await deps.delivery());
      return reply.header('content-type', contentType).header('cache-control', 'no-store').send(text);
    });
  };
}
