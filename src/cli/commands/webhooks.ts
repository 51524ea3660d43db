// `lacre webhooks …`: register, list and remove the webhooks of an API key. `add` prints the
// signing secret once. URLs are vetted like the HTTP API does (https only unless loopback; no
// private, link-local or other special-purpose addresses), through the configured DNS servers.
import type { Command } from 'commander';
import { Resolver } from '../../dns/resolver.ts';
import { EVENT_TYPES } from '../../store/events-table.ts';
import { Webhooks, WebhookError, type WebhookView } from '../../events/webhooks.ts';
import { resolverLookup } from '../../events/url-guard.ts';
import type { Store } from '../../store/store.ts';
import type { Config } from '../../config/schema.ts';
import { CliError, cliActor, print, withStore } from '../context.ts';

function service(store: Store, cfg: Config): Webhooks {
  const resolver = new Resolver({ servers: cfg.dns.servers, timeoutMs: cfg.dns.timeout });
  return new Webhooks(store, { lookup: resolverLookup(resolver), allowLoopback: cfg.webhooks.allowLoopback });
}

async function known<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof WebhookError) throw new CliError(err.message);
    throw err;
  }
}

export function registerWebhookCommands(program: Command): void {
  const webhooks = program
    .command('webhooks')
    .description('Manage webhooks: signed POSTs of delivery events (sent, deferred, bounce, blocked) to a URL, per API key.');

  webhooks
    .command('add <url>')
    .description('Register a webhook for the events of an API key\'s messages and print its signing secret once.')
    .requiredOption('--key <apiKey>', 'the API key whose messages\' events are sent')
    .option('--events <list>', `comma-separated event types: ${EVENT_TYPES.join(', ')}`, 'sent,deferred,bounce,blocked')
    .option('--json', 'print JSON')
    .action(async (url: string, opts: { key: string; events: string; json?: boolean }) => {
      const created = await withStore((store, cfg) =>
        known(() => service(store, cfg).add({ apiKey: opts.key, url, events: opts.events, actor: cliActor() })),
      );
      print(!!opts.json, created, () =>
        [
          `added webhook ${created.id} for API key ${created.apiKey}: ${created.events.join(',')} -> ${created.url}`,
          `signing secret: ${created.secret}`,
          'The secret will not be shown again: store it now. Verify the X-Lacre-Signature header with it (docs/events.md).',
        ].join('\n'),
      );
    });

  webhooks
    .command('list')
    .description('List webhooks with their state and outbox counts (never their secrets).')
    .option('--key <apiKey>', 'only this API key\'s webhooks')
    .option('--json', 'print JSON')
    .action(async (opts: { key?: string; json?: boolean }) => {
      const list = await withStore((store, cfg) => service(store, cfg).list(opts.key), 'existing');
      print(!!opts.json, list, () => (list.length === 0 ? 'no webhooks' : list.map(describe).join('\n')));
    });

  webhooks
    .command('remove <id>')
    .description('Remove a webhook and its undelivered events.')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const removed = await withStore((store, cfg) => service(store, cfg).remove(id, { actor: cliActor() }), 'existing');
      if (!removed) throw new CliError(`no webhook ${id}`);
      print(!!opts.json, { id, removed: true }, () => `removed webhook ${id}`);
    });
}

function describe(w: WebhookView): string {
  const d = w.deliveries;
  return [
    w.id,
    `key ${w.apiKey}`,
    w.events.join(','),
    w.url,
    w.disabledAt ? `disabled ${w.disabledAt} (${w.disabledReason})` : 'enabled',
    `outbox pending ${d.pending} delivered ${d.delivered} failed ${d.failed}`,
  ].join('  ');
}
