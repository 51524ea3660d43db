// `lacre webhooks …` as operators run it: real processes, a real data dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTempData, tempDir } from '../../test/harness/temp-data.ts';
import { runLacreSync } from '../../test/harness/lacre-cli.ts';


const lacre = (args: string[], env: Record<string, string>) => runLacreSync(args, { USER: 'tester', SUDO_USER: '', ...env });

test('webhooks add prints the id and signing secret once; list never shows it; remove deletes; bad input exits 2 naming the problem', async () => {
  // Nothing listens there: only IP literals and localhost are used, which need no lookup.
  const env = { LACRE_DATA_DIR: tempDir(), LACRE_DNS_SERVERS: '127.0.0.1:9', LACRE_DNS_TIMEOUT: '200ms' };
  const key = JSON.parse(lacre(['keys', 'create', '--name', 'app', '--scopes', 'send,read', '--json'], env).stdout);

  const added = lacre(['webhooks', 'add', 'http://127.0.0.1:8999/hook', '--key', key.apiKey, '--events', 'sent,bounce', '--json'], env);
  assert.equal(added.code, 0, added.stderr);
  const hook = JSON.parse(added.stdout);
  assert.match(hook.id, /^[0-9a-f-]{36}$/);
  assert.match(hook.secret, /^whsec_/);
  assert.deepEqual([hook.apiKey, hook.url, hook.events], [key.apiKey, 'http://127.0.0.1:8999/hook', ['sent', 'bounce']]);

  const listed = lacre(['webhooks', 'list', '--json'], env);
  assert.equal(listed.code, 0, listed.stderr);
  assert.ok(!listed.stdout.includes(hook.secret));
  assert.deepEqual(JSON.parse(listed.stdout).map((w: { id: string }) => w.id), [hook.id]);
  assert.match(lacre(['webhooks', 'list', '--key', key.apiKey], env).stdout, /sent,bounce  http:\/\/127\.0\.0\.1:8999\/hook  enabled/);

  const refusals: Array<[string[], RegExp]> = [
    [['webhooks', 'add', 'https://10.0.0.1/h', '--key', key.apiKey], /10\.0\.0\.1, a private address/],
    [['webhooks', 'add', 'https://[fc00::1]/h', '--key', key.apiKey], /unique-local/],
    [['webhooks', 'add', 'http://127.0.0.1/h', '--key', key.apiKey, '--events', 'sent,open'], /unknown event type "open"/],
    [['webhooks', 'add', 'http://127.0.0.1/h', '--key', 'f'.repeat(32)], /no API key/],
    [['webhooks', 'remove', '00000000-0000-7000-8000-000000000000'], /no webhook/],
  ];
  for (const [args, pattern] of refusals) {
    const result = lacre(args, env);
    assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, pattern);
  }
  const noLoopback = lacre(['webhooks', 'add', 'http://127.0.0.1/h', '--key', key.apiKey], { ...env, LACRE_WEBHOOKS_ALLOW_LOOPBACK: 'false' });
  assert.equal(noLoopback.code, 2);
  assert.match(noLoopback.stderr, /loopback receivers are switched off/);

  const removed = lacre(['webhooks', 'remove', hook.id, '--json'], env);
  assert.equal(removed.code, 0, removed.stderr);
  assert.deepEqual(JSON.parse(removed.stdout), { id: hook.id, removed: true });
  assert.equal(lacre(['webhooks', 'list'], env).stdout.trim(), 'no webhooks');

  const data = await openTempData({ dataDir: env.LACRE_DATA_DIR });
  try {
    const audit = await data.store.audit.list({ subject: hook.id });
    assert.deepEqual(audit.map((e) => [e.actor, e.action]), [['cli:tester', 'webhook.add'], ['cli:tester', 'webhook.remove']]);
  } finally {
    await data.close();
  }
});
