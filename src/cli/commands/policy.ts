// `lacre policy …`: the operator's TLS policy per destination domain. `set` and `remove` edit the
// policy table, which a running server picks up within its refresh period without a restart;
// `list` shows it together with LACRE_TLS_POLICIES. Every change is audited as the CLI user.
import type { Command } from 'commander';
import type { Config } from '../../config/schema.ts';
import type { Store } from '../../store/store.ts';
import type { DataDirUse } from '../data-dir.ts';
import { TlsPoliciesTable } from '../../store/tls-policies-table.ts';
import { StaticPolicies, type ListedPolicy } from '../../policy-lookup/static-policies.ts';
import { StaticPolicyError, removeStaticPolicy, setStaticPolicy, type StaticPolicyDeps } from '../../policy-lookup/static-policy-changes.ts';
import { STATIC_TLS_LEVELS } from '../../tls-policy/levels.ts';
import { CliError, cliActor, print, withStore } from '../context.ts';

function deps(store: Store, cfg: Config): StaticPolicyDeps & { policies: StaticPolicies } {
  const table = new TlsPoliciesTable(store.engine, store.sealer);
  const policies = new StaticPolicies({ table, configured: new Map(Object.entries(cfg.tls.policies)), defaultLevel: cfg.tls.defaultPolicy });
  return { table, audit: store.audit, policies };
}

async function run<T>(use: DataDirUse, fn: (d: ReturnType<typeof deps>) => Promise<T>): Promise<T> {
  return withStore(async (store, cfg) => {
    try {
      return await fn(deps(store, cfg));
    } catch (err) {
      if (err instanceof StaticPolicyError) throw new CliError(err.message);
      throw err;
    }
  }, use);
}

/** Returns the `policy` command so more subcommands (`show`) can join it. */
export function registerPolicyCommands(program: Command): Command {
  const policy = program
    .command('policy')
    .description(
      'TLS policy per destination domain: the policy table (set here or through /v1/tls-policies) overrides LACRE_TLS_POLICIES for the same domain.',
    );

  policy
    .command('set <domain> <level>')
    .description(
      `Set the TLS level for a domain (.example.com: every subdomain of example.com). Levels: ${STATIC_TLS_LEVELS.join(', ')}. ` +
        'Running servers apply it within their refresh period.',
    )
    .option('--note <text>', 'why, for whoever reads the list later (a ticket, a contact); replaces any earlier note')
    .option('--json', 'print one JSON document')
    .action(async (domain: string, level: string, opts: { note?: string; json?: boolean }) => {
      const outcome = await run('create', (d) => setStaticPolicy(d, { domain, level, note: opts.note, actor: cliActor() }));
      print(!!opts.json, outcome, () => {
        const { entry, previous, overrides } = outcome;
        const was = previous ? `was ${previous.level}` : 'new table entry';
        const replaces = overrides === undefined ? '' : `; replaces LACRE_TLS_POLICIES ${entry.domain}=${overrides}`;
        return `${entry.domain}: ${entry.level} (${was}${replaces})`;
      });
    });

  policy
    .command('remove <domain>')
    .description('Remove a domain\'s policy table entry: it falls back to LACRE_TLS_POLICIES, a .parent entry, or the default.')
    .option('--json', 'print one JSON document')
    .action(async (domain: string, opts: { json?: boolean }) => {
      const removed = await run('existing', (d) => removeStaticPolicy(d, { domain, actor: cliActor() }));
      print(!!opts.json, { domain: removed.domain, removed: true, previous: removed.level }, () => `removed ${removed.domain} (was ${removed.level})`);
    });

  policy
    .command('list')
    .description('List every static TLS policy, from the policy table and LACRE_TLS_POLICIES, with where each comes from.')
    .option('--json', 'print one JSON document')
    .action(async (opts: { json?: boolean }) => {
      const result = await run('existing', async (d) => ({ defaultLevel: d.policies.defaultLevel, policies: await d.policies.list() }));
      print(!!opts.json, result, () =>
        [`default: ${result.defaultLevel} (LACRE_TLS_DEFAULT_POLICY)`, ...(result.policies.length === 0 ? ['no policies'] : result.policies.map(describe))].join(
          '\n',
        ),
      );
    });

  return policy;
}

function describe(p: ListedPolicy): string {
  const parts = [p.domain, p.level, p.origin];
  if (p.origin === 'table') parts.push(`updated ${p.updatedAt} by ${p.updatedBy}`);
  if (p.overrides !== undefined) parts.push(`overrides config ${p.overrides}`);
  if (p.note) parts.push(`"${p.note}"`);
  return parts.join('  ');
}
