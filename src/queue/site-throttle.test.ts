import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admission, afterBatch, freshSite, startProbe, type Admission, type BatchOutcome, type SiteState, type ThrottleSettings } from './site-throttle.ts';

const settings: ThrottleSettings = { limit: 20, initial: 5, suspendMs: 1_000, maxSuspendMs: 8_000 };
const up = (window: number): SiteState => ({ status: 'up', window, downs: 0, until: 0, reason: null });
const suspended = (until: number, downs = 1): SiteState => ({ status: 'suspended', window: 5, downs, until, reason: 'connect refused' });
const probing: SiteState = { status: 'probing', window: 5, downs: 1, until: 1_000, reason: 'connect refused' };

test('admission, row by row', () => {
  const rows: Array<[string, SiteState, number, number, Admission]> = [
    ['a new site opens its initial window', freshSite(settings), 0, 0, { kind: 'open', slots: 5 }],
    ['an up site gives what is left of its window', up(8), 3, 0, { kind: 'open', slots: 5 }],
    ['a saturated site waits', up(8), 8, 0, { kind: 'wait' }],
    ['a suspended site defers with its reason', suspended(1_000), 0, 500, { kind: 'defer', reason: 'delivery temporarily suspended: connect refused' }],
    ['a suspension that ran out lets one probe through', suspended(1_000), 0, 1_000, { kind: 'open', slots: 1 }],
    ['while the probe is out, the rest waits', probing, 1, 2_000, { kind: 'wait' }],
    ['a probing site with nothing in flight sends one', probing, 0, 2_000, { kind: 'open', slots: 1 }],
  ];
  for (const [why, site, inFlight, now, expected] of rows) assert.deepEqual(admission(site, inFlight, now), expected, why);
});

test('afterBatch, row by row', () => {
  const down: BatchOutcome = { kind: 'down', reason: 'mx.test[127.0.0.1]: connection refused' };
  const rows: Array<[string, SiteState, BatchOutcome, number, Partial<SiteState>]> = [
    ['a delivery widens the window by one', up(5), { kind: 'reached' }, 0, { status: 'up', window: 6 }],
    ['the window never passes the limit', up(20), { kind: 'reached' }, 0, { window: 20 }],
    ['nothing learnt changes nothing', up(7), { kind: 'none' }, 0, { status: 'up', window: 7 }],
    ['a dead site is suspended for the first interval', up(9), down, 100, { status: 'suspended', until: 1_100, downs: 1, window: 5, reason: down.reason }],
    ['a failed probe suspends for twice as long', probing, down, 3_000, { status: 'suspended', until: 5_000, downs: 2 }],
    ['suspensions stop growing at the maximum', { ...probing, downs: 10 }, down, 0, { status: 'suspended', until: 8_000, downs: 11 }],
    ['a batch that was under way when the site was suspended only updates the reason', suspended(1_000), down, 500, { status: 'suspended', until: 1_000, downs: 1, reason: down.reason }],
    ['a probe that gets through reopens the site at the initial window', probing, { kind: 'reached' }, 3_000, { status: 'up', window: 5, downs: 0 }],
    ['a site that answers while suspended is up again', suspended(9_000), { kind: 'reached' }, 500, { status: 'up', window: 5, downs: 0 }],
  ];
  for (const [why, site, outcome, now, expected] of rows) {
    const next = afterBatch(site, outcome, now, settings);
    for (const [field, value] of Object.entries(expected)) assert.deepEqual(next[field as keyof SiteState], value, `${why}: ${field}`);
  }
});

test('startProbe turns a suspension that ran out into a probe, and nothing else', () => {
  assert.equal(startProbe(suspended(1_000), 999).status, 'suspended');
  assert.equal(startProbe(suspended(1_000), 1_000).status, 'probing');
  assert.equal(startProbe(up(5), 5_000).status, 'up');
});
