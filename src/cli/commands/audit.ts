// `lacre audit list`: who changed what, when (keys, domains, policies, webhooks, suppressions, …).
import type { Command } from 'commander';
import { print, withStore } from '../context.ts';
import { parseCount, parseTime } from '../options.ts';

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('The audit log of every change made through the CLI or the API.');
  audit
    .command('list')
    .description('The latest audit entries, oldest of them first.')
    .option('--subject <subject>', 'only entries about this subject (a domain, a key id, …)')
    .option('--action <action>', 'only this action (e.g. key.create, domain.add, suppression.remove)')
    .option('--since <time>', 'only entries at or after this time (ISO 8601 date or date-time)')
    .option('--limit <n>', 'at most this many, the newest (1-1000)', '100')
    .option('--json', 'print JSON: an array of entries')
    .action(async (opts: { subject?: string; action?: string; since?: string; limit: string; json?: boolean }) => {
      const query = {
        subject: opts.subject,
        action: opts.action,
        since: opts.since === undefined ? undefined : parseTime('--since', opts.since),
        limit: parseCount('--limit', opts.limit, 1, 1000),
      };
      const entries = await withStore((store) => store.audit.list(query), 'existing');
      print(!!opts.json, entries, () =>
        entries.length === 0 ? 'no audit entries' : entries.map((e) => `${e.at}  ${e.actor}  ${e.action}  ${e.subject ?? '-'}`).join('\n'),
      );
    });
}
