// The pure rules behind the send API: templating, Globals merging, the batch status, addresses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderTemplate } from './mailjet-template.ts';
import { mergeGlobals, responseStatus, type MessageResult } from './mailjet-send.ts';
import { addressProblem } from './mailjet-schema.ts';
import { mailjetError, relatedPath } from './mailjet-errors.ts';

test('templating fills variables and defaults, and refuses what it cannot render instead of sending it literally', () => {
  const vars = { name: 'Ada', n: 2, yes: false, list: [1], nothing: null };
  assert.deepEqual(renderTemplate('Hi {{var:name}}, {{ var:n }} {{var:x:"things"}} {{var:y:plain default}} {{var:yes}}', vars, 'TextPart'), {
    ok: true,
    text: 'Hi Ada, 2 things plain default false',
  });
  assert.deepEqual(renderTemplate('say {{var:q:"a \\"quoted\\" word"}}', {}, 'TextPart'), { ok: true, text: 'say a "quoted" word' });
  assert.deepEqual(renderTemplate('no tags {here}', {}, 'TextPart'), { ok: true, text: 'no tags {here}' });
  const cases: Array<[string, string, string]> = [
    ['{{var:missing}}', 'mj-0003', 'Variables.missing'],
    ['{{var:list}}', 'mj-0004', 'Variables.list'],
    ['{{var:nothing}}', 'mj-0004', 'Variables.nothing'],
    ['{{data:firstname}}', 'mj-0005', 'HTMLPart'],
    ['{% for x in var:list %}{% endfor %}', 'mj-0005', 'HTMLPart'],
  ];
  for (const [text, code, related] of cases) {
    const result = renderTemplate(text, vars, 'HTMLPart');
    assert.equal(result.ok, false, text);
    if (!result.ok) {
      assert.equal(result.code, code, text);
      assert.equal(result.related, related, text);
    }
  }
});

test('Globals follow Mailjet: message scalars win, objects merge, arrays append', () => {
  const merged = mergeGlobals(
    { Subject: 'g', From: { Email: 'a@x.test', Name: 'G' }, Headers: { A: '1', B: '1' }, Cc: [{ Email: 'g@x.test' }], Bcc: [{ Email: 'b@x.test' }] },
    { Subject: 'm', From: { Name: 'M' }, Headers: { B: '2' }, Cc: [{ Email: 'm@x.test' }], TextPart: 't' },
  );
  assert.deepEqual(merged, {
    Subject: 'm',
    From: { Email: 'a@x.test', Name: 'M' },
    Headers: { A: '1', B: '2' },
    Cc: [{ Email: 'g@x.test' }, { Email: 'm@x.test' }],
    Bcc: [{ Email: 'b@x.test' }],
    TextPart: 't',
  });
});

test('the HTTP status of a batch: 200 all queued, 400 mixed, the shared status when all failed', () => {
  const ok: MessageResult = { Status: 'success', CustomID: '', To: [], Cc: [], Bcc: [] };
  const bad = (code: 'send-0003' | 'send-0008' | 'lacre-0500'): MessageResult => ({ Errors: [mailjetError(code, 'x', [])], Status: 'error' });
  assert.equal(responseStatus([ok, ok]), 200);
  assert.equal(responseStatus([ok, bad('send-0008')]), 400);
  assert.equal(responseStatus([bad('send-0008')]), 403);
  assert.equal(responseStatus([bad('send-0008'), bad('send-0003')]), 400);
  assert.equal(responseStatus([ok, bad('lacre-0500')]), 500);
});

test('addresses: ASCII addr-spec with a fully qualified domain, nothing else', () => {
  for (const good of ['a@b.example', 'first.last+tag@sub.example.org', "o'brien@x-y.example", 'x@xn--bcher-kva.example']) {
    assert.equal(addressProblem(good), null, good);
  }
  const bad: Array<[string, RegExp]> = [
    ['plain', /local-part@domain/],
    ['a@localhost', /fully qualified/],
    ['a@1.2.3.4', /fully qualified/],
    ['a@[127.0.0.1]', /fully qualified/],
    ['"quoted"@b.example', /dot-atom/],
    ['a..b@b.example', /dot-atom/],
    ['jürgen@b.example', /SMTPUTF8/],
    ['a@bücher.example', /SMTPUTF8/],
    ['a@b.example\r\n', /control/],
    ['a b@b.example', /dot-atom/],
    [`${'x'.repeat(65)}@b.example`, /64/],
  ];
  for (const [address, why] of bad) assert.match(addressProblem(address) ?? '', why, address);
  assert.equal(relatedPath(['To', 0, 'Email']), 'To[0].Email');
  assert.equal(relatedPath(['Headers', 'X-A']), 'Headers["X-A"]');
});
