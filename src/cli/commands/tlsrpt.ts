// `lacre tlsrpt …`: SMTP TLS Reporting (RFC 8460). `show` prints the report one recipient domain's
// counts for a UTC day make, exactly as it would be sent, without sending or claiming anything.
import type { Command } from 'commander';
import type { Config } from '../../config/schema.ts';
import { TlsRptTable, type TlsRptReportRow } from '../../store/tlsrpt-table.ts';
import { isDay } from '../../tls-reporting/days.ts';
import { policyDomainName, type TlsRptReport } from '../../tls-reporting/report.ts';
import { previewReport, type ReportIdentity } from '../../tls-reporting/reporter.ts';
import { CliError, print, withStore } from '../context.ts';

export function registerTlsRptCommands(program: Command): void {
  const tlsrpt = program
    .command('tlsrpt')
    .description('SMTP TLS Reporting (RFC 8460): the daily reports on TLS with each recipient domain.');

  tlsrpt
    .command('show')
    .description('Print the report for one recipient domain and UTC day as it would be sent (nothing is sent).')
    .requiredOption('--domain <domain>', 'the recipient (policy) domain, e.g. example.com')
    .requiredOption('--date <YYYY-MM-DD>', 'the UTC day the report covers')
    .option('--json', 'print the report itself: RFC 8460 §4.4 JSON')
    .action(async (opts: { domain: string; date: string; json?: boolean }) => {
      const domain = policyDomainName(opts.domain);
      if (!domain) throw new CliError(`--domain ${JSON.stringify(opts.domain)} is not a domain name (expected e.g. example.com)`);
      if (!isDay(opts.date)) throw new CliError(`--date ${JSON.stringify(opts.date)} is not a day: expected YYYY-MM-DD, e.g. 2026-04-01 (UTC)`);
      const shown = await withStore(async (store, cfg) => {
        const table = new TlsRptTable(store.engine, store.sealer);
        const report = await previewReport(table, reportIdentity(cfg), domain, opts.date);
        if (!report) {
          if (!cfg.tlsReporting.count) {
            throw new CliError(`TLS session counting is off (tlsReporting.count, LACRE_TLSRPT_COUNT=false), so nothing is counted for ${domain}; turn it on and restart lacre serve`);
          }
          throw new CliError(`no TLS sessions with ${domain} were counted on ${opts.date} (UTC)`);
        }
        return { report, state: await table.report(opts.date, table.domainHash(domain)) };
      }, 'existing');
      print(!!opts.json, shown.report, () => describe(shown.report, shown.state));
    });
}

/** Who reports say they are from: `tlsReporting` in the configuration, else the host name. */
export function reportIdentity(cfg: Config): ReportIdentity {
  const t = cfg.tlsReporting;
  return {
    organizationName: t.organizationName ?? cfg.hostname,
    contact: t.contact ?? (t.from ? `mailto:${t.from}` : `mailto:postmaster@${cfg.hostname}`),
  };
}

function describe(report: TlsRptReport, state: TlsRptReportRow | null): string {
  const day = report['date-range']['start-datetime'].slice(0, 10);
  const domain = report.policies[0].policy['policy-domain'];
  const status = !state
    ? 'not sent yet'
    : state.state === 'sent'
      ? `sent (attempt ${state.attempts})`
      : state.state === 'no-rua'
        ? `not sent: the domain takes no reports${state.detail?.reason ? ` (${state.detail.reason})` : ''}`
        : `${state.state} (attempt ${state.attempts})${(state.detail?.errors ?? []).map((e) => `\n  ${e.uri ?? 'report'}: ${e.error}`).join('')}`;
  const lines = [`TLS report for ${domain}, ${day} (UTC): ${status}`, `report-id ${report['report-id']}  from ${report['organization-name']} <${report['contact-info']}>`];
  for (const entry of report.policies) {
    const p = entry.policy;
    const mx = p['mx-host'] ? ` mx ${p['mx-host'].join(', ')}` : '';
    lines.push(
      `  policy ${p['policy-type']}${mx}: ${entry.summary['total-successful-session-count']} successful, ${entry.summary['total-failure-session-count']} failed`,
    );
    for (const d of entry['failure-details'] ?? []) {
      const where = [d['receiving-mx-hostname'], d['receiving-ip'] ? `[${d['receiving-ip']}]` : undefined].filter(Boolean).join(' ');
      const why = d['failure-reason-code'] ? `  (${d['failure-reason-code']})` : '';
      lines.push(`    ${d['failed-session-count']}× ${d['result-type']}${where ? `  ${where}` : ''}${why}`);
    }
  }
  return lines.join('\n');
}
