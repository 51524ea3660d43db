// Lacre's Prometheus metrics (prom-client), named in the style of KumoMTA and postfix_exporter with
// the prefix `lacre_`, and documented one by one in docs/metrics.md. Two registries, one per
// thread: the delivery thread counts attempts (its runner's onAttempt hook) and answers the main
// thread's `metrics` request with registry.getMetricsAsJSON(); the main thread counts intake, auth
// failures and connections, reads the queue's depth from the store at scrape, and merges both with
// AggregatorRegistry.aggregate. Labels are small fixed sets or operator-chosen values (policy
// sources, TLS versions): never an address, a message id or a domain, so cardinality stays bounded.
// Part of server/ (the wiring).
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { AttemptSummary } from '../queue/attempt-summary.ts';
import type { Store } from '../store/store.ts';
import { RECIPIENT_STATES } from '../store/records.ts';

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];
export type Listener = 'http' | 'smtp';

/** Seconds: an attempt takes milliseconds on a LAN and up to the SMTP timeouts (minutes, RFC 5321 §4.5.3.2). */
const LATENCY_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** A label value from an open-ended source, folded into a bounded, Prometheus-safe form. */
function bounded(value: string | undefined, fallback = 'none'): string {
  if (!value) return fallback;
  return value.toLowerCase().replace(/[^a-z0-9.:_-]/g, '_').slice(0, 40);
}

/** The delivery thread's metrics: one attempt per recipient, as the runner records it. */
export class DeliveryMetrics {
  readonly registry = new Registry();
  #deliveries = new Counter({
    name: 'lacre_delivery_attempts_total',
    help: 'Recipient delivery attempts recorded, by result (sent, deferred, bounced, expired, failed), TLS version and TLS policy source.',
    labelNames: ['result', 'tls_version', 'policy_source'] as const,
    registers: [this.registry],
  });
  #deferrals = new Counter({
    name: 'lacre_delivery_deferrals_total',
    help: 'Recipient attempts that ended in a deferral (or an expiry), by reason class.',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  #latency = new Histogram({
    name: 'lacre_delivery_attempt_duration_seconds',
    help: 'Time from the start of a delivery attempt to its verdict, by result.',
    labelNames: ['result'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  record(s: AttemptSummary): void {
    const result = s.status;
    this.#deliveries.inc({ result, tls_version: bounded(s.tls.version), policy_source: bounded(s.tls.source) });
    if (s.reasonClass) this.#deferrals.inc({ reason: s.reasonClass });
    this.#latency.observe({ result }, s.delays.attemptMs / 1000);
  }

  json(): Promise<MetricsJson> {
    return this.registry.getMetricsAsJSON();
  }
}

/** The main thread's metrics: listeners and the queue as the store sees it. */
export class IntakeMetrics {
  readonly registry = new Registry();
  #intake = new Counter({
    name: 'lacre_intake_messages_total',
    help: 'Submissions answered by a listener: accepted (queued) or refused, one per HTTP send request or per SMTP message at the end of DATA.',
    labelNames: ['listener', 'result'] as const,
    registers: [this.registry],
  });
  #authFailures = new Counter({
    name: 'lacre_auth_failures_total',
    help: 'Failed authentications (wrong or unknown credentials), by listener.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  #connections = new Gauge({
    name: 'lacre_connections',
    help: 'Client connections open now, by listener.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });
  #connectionsTotal = new Counter({
    name: 'lacre_connections_total',
    help: 'Client connections accepted since start, by listener.',
    labelNames: ['listener'] as const,
    registers: [this.registry],
  });

  constructor(store: Store, clock: () => number = Date.now) {
    for (const listener of ['http', 'smtp'] as const) {
      // Zeroes are scraped too, so a rate() works from the first sample.
      this.#connections.set({ listener }, 0);
      this.#connectionsTotal.inc({ listener }, 0);
      this.#authFailures.inc({ listener }, 0);
      for (const result of ['accepted', 'refused'] as const) this.#intake.inc({ listener, result }, 0);
    }
    new Gauge({
      name: 'lacre_queue_recipients',
      help: 'Recipients in the store by state, read at scrape (queued and deferred are the queue; the rest is kept history).',
      labelNames: ['state'] as const,
      registers: [this.registry],
      async collect() {
        const counts = await store.countByState();
        for (const state of RECIPIENT_STATES) this.set({ state }, counts[state]);
      },
    });
    new Gauge({
      name: 'lacre_queue_oldest_age_seconds',
      help: 'Age of the oldest message that still has a queued or deferred recipient; 0 when the queue is empty.',
      registers: [this.registry],
      async collect() {
        const oldest = await store.oldestPendingCreatedAt();
        this.set(oldest === null ? 0 : Math.max(0, (clock() - oldest) / 1000));
      },
    });
  }

  submitted(listener: Listener, result: 'accepted' | 'refused'): void {
    this.#intake.inc({ listener, result });
  }

  authFailed(listener: Listener): void {
    this.#authFailures.inc({ listener });
  }

  connectionOpened(listener: Listener): void {
    this.#connections.inc({ listener });
    this.#connectionsTotal.inc({ listener });
  }

  connectionClosed(listener: Listener): void {
    this.#connections.dec({ listener });
  }

  /** The scrape: this registry and the delivery thread's (null when it did not answer), in the text format. */
  async render(delivery: MetricsJson | null): Promise<{ contentType: string; text: string }> {
    const own = await this.registry.getMetricsAsJSON();
    const merged = AggregatorRegistry.aggregate(delivery ? [own, delivery] : [own]);
    return { contentType: merged.contentType, text: await merged.metrics() };
  }
}
