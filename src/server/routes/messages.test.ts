// Reading sent messages back: Mailjet's /v3/REST/message/{MessageID} and Lacre's /v1/messages/{id},
// with least privilege between keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { basicAuth, message, sendApiRig } from '../../../test/harness/send-api.ts';

test('a send-only key reads the messages it sent and no other; a read key reads them all; an admin-only key reads none', async () => {
  const r = await sendApiRig();
  try {
    const as = (k: { apiKey: string; secretKey: string }) => ({ authorization: basicAuth(k) });
    const sent = await r.app.inject({
      method: 'POST',
      url: '/v3.1/send',
      headers: { ...as(r.sender), 'content-type': 'application/json' },
      payload: { Messages: [message({ CustomID: 'invoice-7', Bcc: [{ Email: 'books@rcpt.test' }] })] },
    });
    assert.equal(sent.statusCode, 200, sent.body);
    const [result] = sent.json().Messages;
    const { MessageID, MessageUUID } = result.To[0];

    const mailjet = (k: { apiKey: string; secretKey: string }, id: number | string = MessageID) =>
      r.app.inject({ method: 'GET', url: `/v3/REST/message/${id}`, headers: as(k) });
    const own = await mailjet(r.sender);
    assert.equal(own.statusCode, 200);
    const body = own.json();
    assert.equal(body.Count, 1);
    assert.equal(body.Total, 1);
    const [data] = body.Data;
    assert.equal(data.ID, MessageID);
    assert.equal(data.UUID, MessageUUID);
    assert.equal(data.Status, 'queued');
    assert.equal(data.ContactAlt, 'ada@rcpt.test');
    assert.equal(data.CustomID, 'invoice-7');
    assert.equal(data.AttemptCount, 0);
    assert.equal(data.StatePermanent, false);
    assert.match(data.ArrivedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    // The Bcc recipient has its own id.
    const bcc = await mailjet(r.sender, result.Bcc[0].MessageID);
    assert.equal(bcc.json().Data[0].ContactAlt, 'books@rcpt.test');

    assert.equal((await mailjet(r.reader)).statusCode, 200, 'a read key reads every message');
    const foreign = await mailjet(r.otherSender);
    assert.equal(foreign.statusCode, 404, 'another send-only key cannot tell the message exists');
    assert.deepEqual(foreign.json(), { ErrorInfo: '', ErrorMessage: 'Object not found', StatusCode: 404 });
    assert.equal((await mailjet(r.admin)).statusCode, 403);
    assert.equal((await r.app.inject({ method: 'GET', url: `/v3/REST/message/${MessageID}` })).statusCode, 401);
    assert.equal((await mailjet(r.reader, MessageID + 1000)).statusCode, 404);
    assert.equal((await mailjet(r.reader, 'abc')).statusCode, 404);
    assert.equal((await mailjet(r.reader, '99999999999999999999')).statusCode, 404);

    const lacre = (k: { apiKey: string; secretKey: string }, id: string) => r.app.inject({ method: 'GET', url: `/v1/messages/${id}`, headers: as(k) });
    const byRecipient = await lacre(r.sender, MessageUUID);
    assert.equal(byRecipient.statusCode, 200);
    const view = byRecipient.json();
    assert.equal(view.source, 'api');
    assert.equal(view.requireTls, false);
    assert.equal(view.metadata.customId, 'invoice-7');
    assert.deepEqual(
      view.recipients.map((x: { address: string; state: string; publicId: number; attempts: unknown[] }) => [x.address, x.state, x.publicId, x.attempts.length]),
      [
        ['ada@rcpt.test', 'queued', MessageID, 0],
        ['books@rcpt.test', 'queued', result.Bcc[0].MessageID, 0],
      ],
    );
    const byMessage = await lacre(r.reader, view.id);
    assert.equal(byMessage.statusCode, 200);
    assert.equal(byMessage.json().id, view.id);
    assert.equal((await lacre(r.otherSender, view.id)).statusCode, 404);
    assert.equal((await lacre(r.otherSender, MessageUUID)).statusCode, 404);
    assert.equal((await lacre(r.admin, view.id)).statusCode, 403);
    assert.equal((await lacre(r.reader, 'not-a-uuid')).statusCode, 404);
  } finally {
    await r.close();
  }
});
