// Per-site concurrency and the dead-site throttle, as pure functions over a small state record so
// every row of the policy is tested on its own (site-throttle.test.ts); the runner only keeps the
// records and applies the answers. A site is a destination's next-hop set (see DeliveryAgent.siteOf).
//
// Like Postfix's qmgr (qmgr_queue.c): a site starts at an initial concurrency and gains a slot per
// delivery that reached it, up to the limit ("slow start", initial_destination_concurrency = 5); when a
// batch finds the whole site unreachable the site is suspended: work that comes due meanwhile is
// deferred at once with the site's last failure, without a connection ("delivery temporarily
// suspended"); when the suspension ends one batch probes the site while the rest wait; a probe that
// gets through reopens the site, a failed one suspends it again for twice as long.

export interface SiteState {
  status: 'up' | 'suspended' | 'probing';
  /** Batches this site may have in flight now (slow start towards the limit). */
  window: number;
  /** Consecutive batches that found the site down. */
  downs: number;
  /** When a suspension ends (status suspended). */
  until: number;
  /** The failure that suspended the site, for the deferrals it causes. */
  reason: string | null;
}

export interface ThrottleSettings {
  /** Batches in flight to one site at most (delivery.destinationConcurrency). */
  limit: number;
  /** Window of a site not yet seen, or reopened after a suspension. */
  initial: number;
  /** First suspension; doubles per failed probe up to `maxSuspendMs`. */
  suspendMs: number;
  maxSuspendMs: number;
}

export function freshSite(settings: ThrottleSettings): SiteState {
  return { status: 'up', window: Math.min(settings.initial, settings.limit), downs: 0, until: 0, reason: null };
}

/** What the runner may do with due work for a site right now. */
export type Admission =
  /** Claim up to `slots` more batches. */
  | { kind: 'open'; slots: number }
  /** The site is suspended: defer what is claimed at once, with this reason, without connecting. */
  | { kind: 'defer'; reason: string }
  /** Leave the site's work in the queue for now (saturated, or a probe is on its way). */
  | { kind: 'wait' };

export function admission(site: SiteState, inFlight: number, now: number): Admission {
  if (site.status === 'suspended' && now < site.until) {
    return { kind: 'defer', reason: `delivery temporarily suspended: ${site.reason ?? 'the site was unreachable'}` };
  }
  // A suspension that has run out, or a probe under way: exactly one batch tests the site.
  const window = site.status === 'up' ? site.window : 1;
  const slots = window - inFlight;
  return slots > 0 ? { kind: 'open', slots } : { kind: 'wait' };
}

/** The site's state once its suspension has run out (the next batch is the probe). */
export function startProbe(site: SiteState, now: number): SiteState {
  return site.status === 'suspended' && now >= site.until ? { ...site, status: 'probing' } : site;
}

/** What one batch's outcome teaches about its site. */
export type BatchOutcome =
  /** The site answered (a reply of any kind, a TLS session): it is alive. */
  | { kind: 'reached' }
  /** No address of the site could be reached or would greet. */
  | { kind: 'down'; reason: string }
  /** Nothing learnt about the site (deferred without trying, lease lost, local error). */
  | { kind: 'none' };

export function afterBatch(site: SiteState, outcome: BatchOutcome, now: number, settings: ThrottleSettings): SiteState {
  switch (outcome.kind) {
    case 'none':
      return site;
    case 'reached':
      if (site.status !== 'up') return { ...freshSite(settings) };
      return { ...site, downs: 0, window: Math.min(settings.limit, site.window + 1) };
    case 'down': {
      // A batch already under way when the site was suspended adds nothing but its reason.
      if (site.status === 'suspended') return { ...site, reason: outcome.reason };
      const downs = site.downs + 1;
      const wait = Math.min(settings.maxSuspendMs, settings.suspendMs * 2 ** Math.min(downs - 1, 20));
      return { status: 'suspended', window: Math.min(settings.initial, settings.limit), downs, until: now + wait, reason: outcome.reason };
    }
  }
}
