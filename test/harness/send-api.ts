// A send API under test: a throwaway store, sender domains, compose, API keys, and the HTTP
// listener with the send and message routes registered as `lacre serve` registers them, so tests
// talk to the real routes (by inject, or over a socket with TLS).
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { openTempData, type TempData } from './temp-data.ts';
import { createLogger } from '../../src/log/logger.ts';
import { ApiKeys, type CreatedApiKey } from '../../src/access/api-keys.ts';
import { Resolver } from '../../src/dns/resolver.ts';
import { SenderDomains } from '../../src/domains/sender-domains.ts';
import type { SenderSettings } from '../../src/domains/dns-records.ts';
import { Composer } from '../../src/compose/outgoing.ts';
import { buildHttpServer, type HttpsOptions } from '../../src/server/http.ts';
import { sendRoutes } from '../../src/server/routes/send.ts';
import { messageRoutes } from '../../src/server/routes/messages.ts';

export const SENDER_SETTINGS: SenderSettings = {
  hostname: 'mta.lacre.test',
  returnPathSubdomain: 'bounces',
  returnPathLocalPart: 'bounce',
  spfIp4: [],
  spfIp6: [],
  dmarcRua: 'mailto:dmarc@{domain}',
  tlsRptRua: 'mailto:tlsrpt@{domain}',
};

export interface SendApiRig {
  data: TempData;
  domains: SenderDomains;
  composer: Composer;
  keys: ApiKeys;
  app: FastifyInstance;
  /** Keys: `send` only, another `send` only, `read` only, `admin` only. */
  sender: CreatedApiKey;
  otherSender: CreatedApiKey;
  reader: CreatedApiKey;
  admin: CreatedApiKey;
  /** How often onQueued was called. */
  nudges: { count: number };
  clock: { now: number };
  close(): Promise<void>;
}

export const basicAuth = (k: { apiKey: string; secretKey: string }) => `Basic ${Buffer.from(`${k.apiKey}:${k.secretKey}`).toString('base64')}`;

export async function sendApiRig(
  options: { resolver?: Resolver; https?: HttpsOptions; publicBaseUrl?: string; verify?: (domains: SenderDomains) => Promise<void> } = {},
): Promise<SendApiRig> {
  const data = await openTempData();
  const clock = { now: Date.now() };
  const now = () => clock.now;
  // Without a resolver nothing answers DNS: domains are verified with `force` instead.
  const resolver = options.resolver ?? new Resolver({ servers: ['127.0.0.1:9'], timeoutMs: 200, tries: 1 });
  const domains = new SenderDomains({ store: data.store, resolver, settings: SENDER_SETTINGS, rotationGraceMs: 86_400_000 });
  const composer = new Composer({ queue: data.queue, domains, tag: (id) => data.sealer.lookupHash('return-path', id) });
  const keys = new ApiKeys(data.store);
  const nudges = { count: 0 };
  const app = buildHttpServer({ logger: createLogger({ level: 'silent' }), state: { ready: true }, https: options.https, keys });
  await app.register(sendRoutes({ composer, store: data.store, publicBaseUrl: options.publicBaseUrl, onQueued: () => nudges.count++, clock: now }));
  await app.register(messageRoutes({ store: data.store }));
  if (options.verify) await options.verify(domains);
  else {
    await domains.add('shop.test', 'cli:test');
    const forced = await domains.verify('shop.test', { actor: 'cli:test', force: true });
    assert.equal(forced.domain.status, 'verified');
  }
  const create = (name: string, scopes: Array<'send' | 'read' | 'admin'>) => keys.create({ name, scopes, actor: 'cli:test' });
  const rig: SendApiRig = {
    data,
    domains,
    composer,
    keys,
    app,
    sender: await create('app', ['send']),
    otherSender: await create('other app', ['send']),
    reader: await create('dashboard', ['read']),
    admin: await create('ops', ['admin']),
    nudges,
    clock,
    async close() {
      await app.close();
      await data.close();
    },
  };
  return rig;
}

/** A minimal valid message from the rig's verified domain. */
export function message(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    From: { Email: 'orders@shop.test', Name: 'Shop' },
    To: [{ Email: 'ada@rcpt.test', Name: 'Ada' }],
    Subject: 'Your order',
    TextPart: 'Thank you for your order.',
    ...extra,
  };
}

export async function queuedCount(data: TempData): Promise<number> {
  const counts = await data.store.countByState();
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
