// Pieces that `lacre serve` (both of its threads) and the CLI build the same way from the
// configuration, kept in one place so a delivery, its worker thread and `lacre policy show` can never
// disagree about resolvers or policy sources. Part of server/ (the wiring).
import type { Config } from '../config/schema.ts';
import { Resolver } from '../dns/resolver.ts';
import type { Store } from '../store/store.ts';
import { buildPolicySources, type BuiltPolicySources, type PolicySourcesSettings } from '../policy-lookup/sources.ts';

export function resolverFrom(config: Config): Resolver {
  return new Resolver({ servers: config.dns.servers, timeoutMs: config.dns.timeout, trustAd: config.dns.trustAd });
}

export function policySourcesFrom(
  config: Config,
  deps: { store: Store; resolver: Resolver; ca: string[] } & Pick<PolicySourcesSettings, 'logger' | 'onStaticPoliciesChanged'>,
): BuiltPolicySources {
  return buildPolicySources({
    ...deps,
    configured: config.tls.policies,
    defaultLevel: config.tls.defaultPolicy,
    mtaStsPort: config.tls.mtaSts.port,
    mtaStsFetchTimeoutMs: config.tls.mtaSts.fetchTimeout,
  });
}
