// The HTTP API as `lacre serve` mounts it: every route plugin, registered into an app that
// buildHttpServer made (so each inherits its guard and error shape). One composition for serve
// and for the test that walks every route.
import type { FastifyInstance } from 'fastify';
import type { SenderDomains } from '../domains/sender-domains.ts';
import type { Composer } from '../compose/outgoing.ts';
import type { Store } from '../store/store.ts';
import type { TlsPoliciesTable } from '../store/tls-policies-table.ts';
import type { StaticPolicies } from '../policy-lookup/static-policies.ts';
import type { Webhooks } from '../events/webhooks.ts';
import { domainRoutes } from './routes/domains.ts';
import { tlsPolicyRoutes } from './routes/tls-policies.ts';
import { sendRoutes } from './routes/send.ts';
import { messageRoutes } from './routes/messages.ts';
import { eventRoutes } from './routes/events.ts';
import { webhookRoutes } from './routes/webhooks.ts';
import { metricsRoutes, type MetricsDeps } from './routes/metrics.ts';
import { queueActionRoutes } from './routes/queue-actions.ts';
import type { QueueActions } from '../queue/operator-actions.ts';

export interface ApiDeps {
  domains: SenderDomains;
  composer: Composer;
  store: Store;
  tlsPolicyTable: TlsPoliciesTable;
  /** The same instance delivery decides with, so a change through the API applies at once. */
  staticPolicies: StaticPolicies;
  webhooks: Webhooks;
  /** Called after a request queued mail: wakes the delivery stage. */
  onQueued?: () => void;
  /** Shown in /openapi.json. */
  version: string;
  metrics: MetricsDeps;
  /** Operators' retry/hold/release/delete/bounce (server/queue-actions.ts builds it). */
  queueActions: QueueActions;
}

export async function registerApiRoutes(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  await app.register(domainRoutes({ domains: deps.domains }));
  await app.register(tlsPolicyRoutes({ table: deps.tlsPolicyTable, audit: deps.store.audit, policies: deps.staticPolicies }));
  await app.register(sendRoutes({ composer: deps.composer, store: deps.store, onQueued: deps.onQueued, version: deps.version }));
  await app.register(messageRoutes({ store: deps.store }));
  await app.register(eventRoutes({ store: deps.store }));
  await app.register(webhookRoutes({ webhooks: deps.webhooks }));
  await app.register(metricsRoutes(deps.metrics));
  await app.register(queueActionRoutes({ actions: deps.queueActions }));
}
