// nodemailer's SMTP client as an independent reference peer for the harness's self-tests: if the
// sinks and proxies behave as they claim for a well-known client, tests of Lacre's own client can
// trust them. Promise wrappers and short timeouts so a broken peer fails a test instead of hanging it.
import assert from 'node:assert/strict';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { SMTPConnectionOptions, SMTPConnectionSendInfo, SMTPEnvelope } from 'nodemailer/lib/smtp-connection';

export type NodemailerError = Error & {
  code?: string;
  command?: string;
  originalCode?: string;
  responseCode?: number;
  response?: string;
  timeoutType?: string;
};

export function referenceClient(
  target: { host?: string; port: number },
  trust: { ca: string; servername: string },
  opts: SMTPConnectionOptions = {},
): SMTPConnection {
  const c = new SMTPConnection({
    host: target.host ?? '127.0.0.1',
    port: target.port,
    name: 'client.lacre.test',
    connectionTimeout: 3000,
    greetingTimeout: 3000,
    socketTimeout: 3000,
    socketCloseTimeout: 0,
    ...opts,
    tls: { ca: trust.ca, servername: trust.servername, ...opts.tls },
  });
  c.on('error', () => {}); // the same errors reach the callbacks below
  return c;
}

export function connect(c: SMTPConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    c.once('error', onError);
    c.connect((err) => {
      c.off('error', onError);
      if (err) reject(err);
      else resolve();
    });
  });
}

export function send(c: SMTPConnection, envelope: SMTPEnvelope, message: string): Promise<SMTPConnectionSendInfo> {
  return new Promise((resolve, reject) => c.send(envelope, message, (err, info) => (err ? reject(err) : resolve(info!))));
}

export async function failure(p: Promise<unknown>): Promise<NodemailerError> {
  try {
    await p;
  } catch (err) {
    return err as NodemailerError;
  }
  assert.fail('expected the operation to fail');
}
