import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../../test/harness/temp-data.ts';
import { createLogger } from '../../log/logger.ts';
import { ApiKeys } from '../../access/api-keys.ts';
import { buildHttpServer } from '../http.ts';
import { eventRoutes } from './events.ts';

const basic = (k: { apiKey: string; secretKey: string }) => ({ authorization: `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}` });

test('GET /v1/events pages with a cursor through the key\'s own events; send-only keys are refused, admin+read keys see all', async () => {
  const data = await openTempData();
  const keys = new ApiKeys(data.store);
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, keys });
  try {
    await app.register(eventRoutes({ store: data.store }));
    const a = await keys.create({ name: 'a', scopes: ['send', 'read'], actor: 'cli:test' });
    const b = await keys.create({ name: 'b', scopes: ['send', 'read'], actor: 'cli:test' });
    const sendOnly = await keys.create({ name: 'sender', scopes: ['send'], actor: 'cli:test' });
    const ops = await keys.create({ name: 'ops', scopes: ['read', 'admin'], actor: 'cli:test' });
    const enqueue = (apiKeyId: string) =>
      data.queue.enqueue({ sender: 'app@sender.test', recipients: ['x@rcpt.test'], content: Buffer.from('Subject: x\r\n\r\nx\r\n'), source: 'api', metadata: { apiKeyId, customId: apiKeyId.slice(0, 4) } });
    const ma = await enqueue(a.apiKey);
    const mb = await enqueue(b.apiKey);
    const t0 = Date.now();
    for (let i = 0; i < 7; i++) {
      const m = i % 3 === 2 ? mb : ma;
      await data.store.events.append({
        type: i % 2 === 0 ? 'sent' : 'deferred',
        at: t0 + i * 1000,
        messageId: m.messageId,
        recipientId: m.recipients[0].id,
        apiKeyId: m === ma ? a.apiKey : b.apiKey,
        facts: { email: `r${i}@rcpt.test`, replyCode: 250, replyText: 'OK', customId: 'c' },
      });
    }
    const get = (url: string, key?: typeof a) => app.inject({ method: 'GET', url, headers: key ? basic(key) : {} });

    assert.equal((await get('/v1/events')).statusCode, 401);
    const refused = await get('/v1/events', sendOnly);
    assert.equal(refused.statusCode, 403);
    assert.match(refused.json().ErrorMessage, /"read" scope/);

    // a: events 0, 1, 3, 4, 6 (2 and 5 are b's), two at a time.
    const seen: string[] = [];
    let cursor: string | null = null;
    const pages: number[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await get(`/v1/events?limit=2${cursor ? `&since=${cursor}` : ''}`, a);
      assert.equal(res.statusCode, 200, res.body);
      const page = res.json();
      pages.push(page.count);
      seen.push(...page.events.map((e: { email: string }) => e.email));
      if (!page.hasMore) {
        cursor = page.next;
        break;
      }
      cursor = page.next;
    }
    assert.deepEqual(pages, [2, 2, 1]);
    assert.deepEqual(seen, ['r0@rcpt.test', 'r1@rcpt.test', 'r3@rcpt.test', 'r4@rcpt.test', 'r6@rcpt.test']);
    // Polling from the last cursor: nothing new, and the cursor stays put.
    const empty = (await get(`/v1/events?since=${cursor}`, a)).json();
    assert.deepEqual([empty.count, empty.next, empty.hasMore], [0, cursor, false]);
    // A new event shows up from that cursor.
    await data.store.events.append({ type: 'bounce', at: Date.now(), messageId: ma.messageId, recipientId: null, apiKeyId: a.apiKey, facts: { email: 'late@rcpt.test', hardBounce: true, suppressed: true, enhancedCode: '5.1.1', replyCode: 550, reason: 'no such user' } });
    const late = (await get(`/v1/events?since=${cursor}`, a)).json();
    assert.deepEqual(late.events.map((e: { email: string; event: string }) => [e.event, e.email]), [['bounce', 'late@rcpt.test']]);
    assert.equal(late.events[0].hard_bounce, true);
    assert.equal(late.events[0].error, 'user unknown');

    const first = (await get('/v1/events?limit=1', a)).json().events[0];
    assert.deepEqual(Object.keys(first).sort(), ['CustomID', 'Message_GUID', 'Payload', 'email', 'event', 'event_id', 'message_uuid', 'smtp_reply', 'time'].sort());
    assert.equal(first.time, Math.floor(t0 / 1000));
    assert.equal(first.smtp_reply, '250 OK');

    assert.equal((await get('/v1/events?limit=100', b)).json().count, 2);
    assert.equal((await get('/v1/events?limit=100', ops)).json().count, 8);
    assert.deepEqual((await get('/v1/events?type=deferred', a)).json().events.map((e: { email: string }) => e.email), ['r1@rcpt.test', 'r3@rcpt.test']);

    const bad: Array<[string, RegExp]> = [
      ['/v1/events?since=nope', /since: expected an event id/],
      ['/v1/events?limit=0', /limit/],
      ['/v1/events?limit=5000', /limit/],
      ['/v1/events?type=opened', /unknown event type "opened"/],
      ['/v1/events?cursor=x', /cursor/],
    ];
    for (const [url, pattern] of bad) {
      const res = await get(url, a);
      assert.equal(res.statusCode, 400, url);
      assert.match(res.json().message, pattern, url);
    }
  } finally {
    await app.close();
    await data.close();
  }
});
