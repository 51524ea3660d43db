// `lacre domains …`: register sender domains, print the DNS records to publish, verify them,
// rotate DKIM keys. Thin over SenderDomains, the same service the HTTP API uses.
import type { Command } from 'commander';
import type { Config } from '../../config/schema.ts';
import type { Store } from '../../store/store.ts';
import type { DataDirUse } from '../data-dir.ts';
import { Resolver } from '../../dns/resolver.ts';
import { SenderDomains, DomainError, senderSettingsFrom, type DomainView, type VerifyOutcome } from '../../domains/sender-domains.ts';
import { withStore, print, CliError, cliActor, config } from '../context.ts';
import { configWarnings } from '../../config/warnings.ts';

function service(store: Store, cfg: Config): SenderDomains {
  return new SenderDomains({
    store,
    resolver: new Resolver({ servers: cfg.dns.servers, timeoutMs: cfg.dns.timeout }),
    settings: senderSettingsFrom(cfg),
    rotationGraceMs: cfg.senders.dkimRotationGrace,
  });
}

async function run<T>(use: DataDirUse, fn: (domains: SenderDomains) => Promise<T>): Promise<T> {
  return withStore(async (store, cfg) => {
    try {
      return await fn(service(store, cfg));
    } catch (err) {
      if (err instanceof DomainError) throw new CliError(err.message);
      throw err;
    }
  }, use);
}

export function registerDomainCommands(program: Command): void {
  const domains = program
    .command('domains')
    .description('Sender domains: Lacre sends only as domains whose owners proved control through DNS, and DKIM-signs all their mail.');

  domains
    .command('add <domain>')
    .description('Register a sender domain, generate its DKIM keys (Ed25519 and RSA-2048) and print the DNS records to publish.')
    .option('--json', 'print one JSON document')
    .action(async (name: string, opts: { json?: boolean }) => {
      const view = await run('create', (d) => d.add(name, cliActor()));
      // The records printed name this host: a single-label name would publish an SPF and MX that
      // resolve nowhere, so say so beside them (stderr: --json stays one document).
      for (const warning of configWarnings(config())) process.stderr.write(`lacre: warning: ${warning}\n`);
      print(!!opts.json, view, () => describeDomain(view) + `\n\nThen run: lacre domains verify ${view.domain}`);
    });

  domains
    .command('verify <domain>')
    .description('Look the domain\'s records up through the configured resolvers and report each one; exits 0 only when the domain is verified.')
    .option('--force', 'mark the domain verified without DNS (for trials); recorded in the audit log with who did it')
    .option('--json', 'print one JSON document')
    .action(async (name: string, opts: { json?: boolean; force?: boolean }) => {
      const outcome = await run('existing', (d) => d.verify(name, { actor: cliActor(), force: !!opts.force }));
      print(!!opts.json, outcome, () => describeVerification(outcome));
      if (outcome.domain.status !== 'verified') process.exitCode = 1;
    });

  domains
    .command('list')
    .description('List sender domains and their status.')
    .option('--json', 'print one JSON document')
    .action(async (opts: { json?: boolean }) => {
      const list = await run('existing', (d) => d.list());
      print(!!opts.json, list.map(({ records: _r, ...rest }) => rest), () =>
        list.length === 0
          ? 'no sender domains (add one with `lacre domains add DOMAIN`)'
          : list
              .map((d) => `${d.domain.padEnd(32)} ${d.status.padEnd(9)} ${d.dkimKeys.filter((k) => k.state === 'active').map((k) => k.selector).join(', ')}`)
              .join('\n'),
      );
    });

  domains
    .command('show <domain>')
    .description('Show a sender domain, its DKIM keys and the DNS records to publish.')
    .option('--json', 'print one JSON document')
    .action(async (name: string, opts: { json?: boolean }) => {
      const view = await run('existing', (d) => d.show(name));
      print(!!opts.json, view, () => describeDomain(view));
    });

  domains
    .command('remove <domain>')
    .description('Remove a sender domain and erase its DKIM keys; mail from it is refused from then on.')
    .option('--json', 'print one JSON document')
    .action(async (name: string, opts: { json?: boolean }) => {
      await run('existing', (d) => d.remove(name, cliActor()));
      print(!!opts.json, { domain: name, removed: true }, () => `removed ${name}`);
    });

  domains
    .command('rotate-dkim <domain>')
    .description('Start a DKIM key rotation: a new selector pair is published beside the current one; signing switches when it verifies, and the old keys retire after senders.dkimRotationGrace.')
    .option('--json', 'print one JSON document')
    .action(async (name: string, opts: { json?: boolean }) => {
      const view = await run('existing', (d) => d.rotateDkim(name, cliActor()));
      print(!!opts.json, view, () => describeDomain(view) + `\n\nPublish the new DKIM records, keep the old ones, then run: lacre domains verify ${view.domain}`);
    });
}

function describeDomain(view: DomainView): string {
  const lines = [
    `${view.domain}  ${view.status}${view.verifiedBy ? ` (by ${view.verifiedBy})` : ''}  return path: ${view.returnPathDomain}`,
    '',
    'DKIM keys:',
    ...view.dkimKeys.map((k) => `  ${k.selector.padEnd(18)} ${k.algorithm.padEnd(8)} ${k.state}${k.retireAt ? ` until ${k.retireAt}` : ''}`),
    '',
    'DNS records to publish:',
  ];
  for (const r of view.records) {
    lines.push(`  ${r.type.padEnd(5)} ${r.name}${r.required ? '   (required)' : ''}`);
    for (const valueLine of r.value.trimEnd().split(/\r?\n/)) lines.push(`        ${valueLine}`);
    if (r.note) lines.push(`        # ${r.note}`);
  }
  return lines.join('\n');
}

function describeVerification(outcome: VerifyOutcome): string {
  const { domain, report } = outcome;
  if (outcome.forced) return `${domain.domain}: marked verified without DNS (forced); recorded in the audit log`;
  if (!report) return '';
  const lines = [`${domain.domain}: ${domain.status}${report.conclusive ? '' : ' (some lookups failed; status unchanged)'}`];
  for (const r of report.records) {
    lines.push(`  ${r.status.padEnd(7)} ${r.type.padEnd(4)} ${r.name}${r.required ? '' : '  (recommended)'}`);
    if (r.status !== 'ok') {
      lines.push(`          ${r.detail}`);
      for (const f of r.found) lines.push(`          found:    ${f}`);
      if (r.status !== 'error') lines.push(`          expected: ${r.expected.split(/\r?\n/)[0]}`);
    }
  }
  lines.push(`  DMARC: ${report.dmarc.policy} — ${report.dmarc.recommendation}`);
  if (outcome.activated.length > 0) lines.push('  DKIM: the new keys verified; signing has switched to them');
  return lines.join('\n');
}
