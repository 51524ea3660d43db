// `lacre suppressions list|add|remove`: the addresses intake refuses to send to.
import type { Command } from 'commander';
import { Suppressions, SuppressionError } from '../../intake/suppressions.ts';
import { MAX_PAGE } from '../../store/message-search.ts';
import { CliError, cliActor, print, withStore } from '../context.ts';
import type { DataDirUse } from '../data-dir.ts';
import type { Store } from '../../store/store.ts';
import { parseCount } from '../options.ts';

async function run<T>(use: DataDirUse, fn: (s: Suppressions) => Promise<T>): Promise<T> {
  return withStore(async (store: Store) => {
    try {
      return await fn(new Suppressions(store));
    } catch (err) {
      if (err instanceof SuppressionError) throw new CliError(err.message);
      throw err;
    }
  }, use);
}

export function registerSuppressionCommands(program: Command): void {
  const suppressions = program
    .command('suppressions')
    .description('The suppression list: addresses that hard-bounced or that an operator added; sends to them are refused.');

  suppressions
    .command('list')
    .description('List suppressed addresses, newest first.')
    .option('--limit <n>', `at most this many (1-${MAX_PAGE})`, '100')
    .option('--offset <n>', 'skip this many first', '0')
    .option('--json', 'print JSON: {total, count, items}')
    .action(async (opts: { limit: string; offset: string; json?: boolean }) => {
      const limit = parseCount('--limit', opts.limit, 1, MAX_PAGE);
      const offset = parseCount('--offset', opts.offset, 0, Number.MAX_SAFE_INTEGER);
      const page = await run('existing', (s) => s.list({ limit, offset }));
      print(!!opts.json, { total: page.total, count: page.items.length, items: page.items }, () =>
        page.items.length === 0
          ? 'no suppressed addresses'
          : page.items.map((e) => `${e.since}  ${e.address ?? `(hash ${e.addressHash.slice(0, 12)})`}  ${e.reason}`).join('\n'),
      );
    });

  suppressions
    .command('add <address>')
    .description('Suppress an address: later sends to it are refused. Audited.')
    .option('--reason <text>', 'why (kept sealed)')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { reason?: string; json?: boolean }) => {
      const added = await run('existing', (s) => s.add(address, { reason: opts.reason, actor: cliActor() }));
      print(!!opts.json, { address, added }, () => (added ? `suppressed ${address}` : `${address} was already suppressed`));
    });

  suppressions
    .command('remove <address>')
    .description('Take an address off the suppression list, so it may be mailed again. Audited.')
    .option('--json', 'print JSON')
    .action(async (address: string, opts: { json?: boolean }) => {
      const removed = await run('existing', (s) => s.remove(address, { actor: cliActor() }));
      if (!removed) throw new CliError(`${address} is not suppressed; see: lacre suppressions list`);
      print(!!opts.json, { address, removed }, () => `${address} may be mailed again`);
    });
}
