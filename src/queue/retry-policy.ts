// What happens to a recipient after an attempt: pure functions over the attempt's verdict, its
// number and the clock, so every path of the state machine is tested without a queue.
//   queued ──attempt──► delivered | bounced | failed          (final)
//      │                   ▲
//      └──► deferred ──────┘ ──► expired (transient failures past the maximum age)
import type { AttemptOutcome, RecipientState } from '../store/records.ts';

export interface RetrySchedule {
  /** Wait after the first transient failure (Postfix minimal_backoff_time, 300s). */
  minBackoffMs: number;
  /** Longest wait between attempts (Postfix maximal_backoff_time, 4000s). */
  maxBackoffMs: number;
  /** Give up after this age (Postfix maximal_queue_lifetime, 5 days). */
  maxAgeMs: number;
}

/**
 * - delivered: the destination accepted the message (2xx).
 * - transient: try again later (4xx, connection or DNS failure, policy not met yet).
 * - permanent: the destination refused for good (5xx, null MX, NXDOMAIN): the recipient bounces.
 * - failed: Lacre itself will not deliver (suppressed address, unreadable message).
 * - unknown: the message may or may not have arrived (the connection was lost after the final
 *   dot, RFC 1047); deferred like a transient failure, but recorded as an unknown outcome so
 *   nobody mistakes the retry for a first delivery.
 */
export type VerdictKind = 'delivered' | 'transient' | 'permanent' | 'failed' | 'unknown';

export interface Transition {
  state: RecipientState;
  outcome: Exclude<AttemptOutcome, 'abandoned' | 'released'>;
  nextAttemptAt: number;
}

/** Delay after the n-th consecutive failed attempt (n ≥ 1): doubling from min, capped at max. */
export function backoffDelay(attemptNumber: number, schedule: RetrySchedule): number {
  const exponent = Math.max(0, Math.min(attemptNumber - 1, 40));
  return Math.min(schedule.maxBackoffMs, schedule.minBackoffMs * 2 ** exponent);
}

export function nextTransition(
  verdict: VerdictKind,
  attempt: { number: number; now: number; expiresAt: number },
  schedule: RetrySchedule,
): Transition {
  switch (verdict) {
    case 'delivered':
      return { state: 'delivered', outcome: 'delivered', nextAttemptAt: attempt.now };
    case 'permanent':
      return { state: 'bounced', outcome: 'bounced', nextAttemptAt: attempt.now };
    case 'failed':
      return { state: 'failed', outcome: 'failed', nextAttemptAt: attempt.now };
    case 'transient':
    case 'unknown': {
      const outcome = verdict === 'unknown' ? 'unknown' : 'deferred';
      if (attempt.now >= attempt.expiresAt) {
        return { state: 'expired', outcome, nextAttemptAt: attempt.now };
      }
      // The last retry lands on the expiry time itself rather than being skipped.
      const next = Math.min(attempt.now + backoffDelay(attempt.number, schedule), attempt.expiresAt);
      return { state: 'deferred', outcome, nextAttemptAt: next };
    }
  }
}

/** The whole schedule of retry delays up to the maximum age, for docs and operators. */
export function retryTimeline(schedule: RetrySchedule): number[] {
  const times: number[] = [];
  let at = 0;
  for (let n = 1; n < 10_000; n++) {
    at += backoffDelay(n, schedule);
    if (at >= schedule.maxAgeMs) break;
    times.push(at);
  }
  return times;
}
