// Finding mail from the command line, as operators run it: any id the API returned shows the
// message; list filters by recipient, CustomID, state, domain and date; suppressions and the audit
// log can be read and changed. Real processes over a real data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData } from '../../test/harness/temp-data.ts';
import { runLacreSync } from '../../test/harness/lacre-cli.ts';


const lacre = runLacreSync;
const json = (r: ReturnType<typeof lacre>) => {
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
};

async function seeded() {
  const data = await openTempData({ keep: true });
  const content = Buffer.from('Subject: x\r\n\r\ny\r\n');
  const first = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['ana@one.test', 'bo@two.test'], content, source: 'api', metadata: { customId: 'order-17' } });
  const second = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['Ana@One.test'], content, source: 'smtp' });
  const publicIds = await data.store.sendApi.publicIdsOf(first.messageId);
  await data.close();
  return { env: { LACRE_DATA_DIR: data.dataDir }, first, second, publicIds };
}

test('messages show takes the message id, a MessageUUID or a MessageID, and names all three when none matches', async () => {
  const { env, first, publicIds } = await seeded();
  const bo = first.recipients[1];
  for (const id of [first.messageId, bo.id, String(publicIds.get(bo.id))]) {
    const view = json(lacre(['messages', 'show', id, '--json'], env));
    assert.equal(view.id, first.messageId, id);
    assert.deepEqual(view.recipients.map((r: { address: string }) => r.address), ['ana@one.test', 'bo@two.test']);
  }
  for (const id of ['999999', '0190a0a0-0000-7000-8000-000000000000', 'nope']) {
    const missing = lacre(['messages', 'show', id], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, new RegExp(`^lacre: no message with id ${id} \\(expected a message id, a MessageUUID or a MessageID\\); find one with: lacre messages list\\n$`));
  }
});

test('messages list filters by recipient (any case), CustomID, state, domain and date, newest first, paged', async () => {
  const { env, first, second, publicIds } = await seeded();
  const all = json(lacre(['messages', 'list', '--json'], env));
  assert.equal(all.total, 3);
  assert.equal(all.items[0].messageId, second.messageId, 'newest first');
  const ana = json(lacre(['messages', 'list', '--recipient', 'ANA@one.test', '--json'], env));
  assert.deepEqual(ana.items.map((i: { messageId: string }) => i.messageId).sort(), [first.messageId, second.messageId].sort());
  const order = json(lacre(['messages', 'list', '--custom-id', 'order-17', '--json'], env));
  assert.equal(order.total, 2);
  assert.ok(order.items.every((i: { customId: string }) => i.customId === 'order-17'));
  const two = json(lacre(['messages', 'list', '--domain', 'TWO.test', '--json'], env));
  assert.deepEqual(two.items.map((i: { recipientId: string; publicId: number }) => [i.recipientId, i.publicId]), [[first.recipients[1].id, publicIds.get(first.recipients[1].id)]]);
  assert.equal(json(lacre(['messages', 'list', '--state', 'delivered', '--json'], env)).total, 0);
  assert.equal(json(lacre(['messages', 'list', '--state', 'queued', '--json'], env)).total, 3);
  assert.equal(json(lacre(['messages', 'list', '--until', '2000-01-01', '--json'], env)).total, 0);
  assert.equal(json(lacre(['messages', 'list', '--since', '2000-01-01T00:00:00Z', '--json'], env)).total, 3);
  const page = json(lacre(['messages', 'list', '--limit', '2', '--offset', '2', '--json'], env));
  assert.deepEqual([page.total, page.count], [3, 1]);
  assert.match(lacre(['messages', 'list', '--limit', '1'], env).stdout, /1 of 3; next page: --offset 1/);
  for (const [args, message] of [
    [['--state', 'lost'], /--state "lost" is not a state: expected one of queued, deferred/],
    [['--since', 'yesterday'], /--since "yesterday" is not a time/],
    [['--limit', '0'], /--limit "0" is not a whole number from 1 to 1000/],
  ] as const) {
    const bad = lacre(['messages', 'list', ...args], env);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, message);
  }
});

test('suppressions list, add and remove change what intake refuses, and each change is in the audit log', async () => {
  const { env } = await seeded();
  assert.deepEqual(json(lacre(['suppressions', 'list', '--json'], env)), { total: 0, count: 0, items: [] });
  assert.equal(json(lacre(['suppressions', 'add', 'Zed@Three.test', '--reason', 'asked us', '--json'], env)).added, true);
  assert.equal(json(lacre(['suppressions', 'add', 'zed@three.test', '--json'], env)).added, false);
  const listed = json(lacre(['suppressions', 'list', '--json'], env));
  assert.equal(listed.total, 1);
  assert.equal(listed.items[0].address, 'zed@three.test');
  assert.equal(listed.items[0].reason, 'asked us');
  const data = await openTempData({ dataDir: env.LACRE_DATA_DIR, keep: true });
  const refused = await data.queue.enqueue({ sender: 'app@sender.test', recipients: ['zed@three.test', 'ok@three.test'], content: Buffer.from('S: x\r\n\r\ny\r\n'), source: 'api' });
  assert.deepEqual(refused.refused.map((r) => r.address), ['zed@three.test']);
  await data.close();
  assert.equal(json(lacre(['suppressions', 'remove', 'ZED@three.test', '--json'], env)).removed, true);
  const again = lacre(['suppressions', 'remove', 'zed@three.test'], env);
  assert.equal(again.code, 2);
  assert.match(again.stderr, /zed@three\.test is not suppressed; see: lacre suppressions list/);
  const bad = lacre(['suppressions', 'add', 'not an address'], env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /"not an address" is not an email address/);
  const audit = json(lacre(['audit', 'list', '--json'], env));
  assert.deepEqual(audit.map((e: { action: string }) => e.action), ['suppression.add', 'suppression.remove']);
  assert.ok(audit.every((e: { subject: string; actor: string }) => !e.subject.includes('@') && e.actor.startsWith('cli:')), 'the subject is a hash, not the address');
  assert.deepEqual(json(lacre(['audit', 'list', '--action', 'suppression.remove', '--json'], env)).length, 1);
  assert.deepEqual(json(lacre(['audit', 'list', '--limit', '1', '--json'], env)).map((e: { action: string }) => e.action), ['suppression.remove']);
});
