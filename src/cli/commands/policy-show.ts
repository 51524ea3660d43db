// `lacre policy show DOMAIN`: resolves the effective TLS policy for a destination exactly as a
// delivery would (same resolver settings, evidence sources and engine) and prints it with the
// evidence: MX records and their DNSSEC status, TLSA records per MX host, the MTA-STS TXT record
// and policy, the static entry. Nothing is sent; an MTA-STS policy it fetches is cached as a
// delivery's would be.
import type { Command } from 'commander';
import { policySourcesFrom, resolverFrom } from '../../server/wiring.ts';
import { extraCasFrom } from '../../server/preflight.ts';
import { explainPolicy } from '../../delivery/explain-policy.ts';
import { normalizeDomain } from '../../delivery/destination.ts';
import { CliError, print, withStore } from '../context.ts';

export function registerPolicyShow(policy: Command): void {
  policy
    .command('show <domain>')
    .description(
      'Resolve and print the effective TLS policy for a destination domain with its evidence (MX and DNSSEC, TLSA, MTA-STS, static policy), without sending anything.',
    )
    .option('--require-tls', 'plan as for a message sent with REQUIRETLS (RFC 8689)')
    .option('--json', 'print one JSON document')
    .action(async (rawDomain: string, opts: { json?: boolean; requireTls?: boolean }) => {
      const domain = normalizeDomain(rawDomain);
      if (!domain) throw new CliError(`"${rawDomain}" is not a domain name (IDNs as A-labels, xn--…)`);
      const view = await withStore(async (store, cfg) => {
        const ca = extraCasFrom(cfg);
        const resolver = resolverFrom(cfg);
        const built = policySourcesFrom(cfg, { store, resolver, ca });
        return explainPolicy(domain, {
          resolver,
          trustAd: cfg.dns.trustAd,
          routes: new Map(Object.entries(cfg.delivery.routes)),
          smtpPort: cfg.delivery.smtpPort,
          sources: built.sources,
          mtaStsRaw: async (d) => ({ ...(await built.mtaSts.show(d)) }),
          allowTlsRequiredNo: cfg.tls.allowTlsRequiredNo,
          requireTls: opts.requireTls,
        });
      });
      print(!!opts.json, view, () => textView(view));
    });
}

function textView(view: Record<string, any>): string {
  const lines: string[] = [`${view.domain}${view.requireTls ? ' (REQUIRETLS)' : ''}`];
  const eff = view.effective ?? {};
  lines.push(eff.deliverable ? `  effective: ${eff.level} (${eff.source}) — ${eff.why}` : `  effective: not deliverable — ${eff.reason}`);
  lines.push(`  static: ${view.static?.level} (${view.static?.source})`);
  const sts = view.mtaSts?.evidence ?? view.mtaSts;
  lines.push(`  mta-sts: ${sts?.kind === 'policy' ? `${sts.policy.mode} (id ${sts.policy.id}, mx ${sts.policy.mx.join(' ')})` : sts?.kind === 'failed' ? `${sts.failure}: ${sts.detail}` : 'none'}`);
  lines.push(`  dnssec: ${view.dnssec?.note}`);
  for (const hop of view.mx?.hosts ?? []) {
    const plan = hop.plan;
    lines.push(
      `  mx ${hop.preference} ${hop.host} [${hop.addresses.join(', ')}]${hop.addressesSecure ? ' (secure)' : ''}: tlsa ${hop.tlsa.kind}` +
        (plan.action === 'connect' ? ` → ${plan.level} (${plan.source})` : ` → skip: ${plan.failure} (${plan.detail})`),
    );
  }
  return lines.join('\n');
}
