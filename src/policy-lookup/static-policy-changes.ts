// policy-lookup/ gathers the evidence TLS policy is decided on (DNSSEC TLSA, MTA-STS, static table);
//
// This file: changing the policy table, audited, the one way `lacre policy` and /v1/tls-policies
// both do it, so the audit trail reads the same whichever door a change came through.
import type { AuditTable } from '../store/audit-table.ts';
import type { TlsPoliciesTable, TlsPolicyRecord } from '../store/tls-policies-table.ts';
import type { StaticTlsLevel } from '../tls-policy/levels.ts';
import type { StaticPolicies } from './static-policies.ts';
import { TlsPolicyInputError, policyKeyOf, policyLevelOf, policyNoteOf } from './static-policy-input.ts';

export class StaticPolicyError extends Error {
  override name = 'StaticPolicyError';
  /** `invalid`: bad domain, level or note. `unknown`: no table entry. `configured`: only in LACRE_TLS_POLICIES. */
  readonly kind: 'invalid' | 'unknown' | 'configured';
  constructor(kind: 'invalid' | 'unknown' | 'configured', message: string) {
    super(message);
    this.kind = kind;
  }
}

export interface StaticPolicyDeps {
  table: TlsPoliciesTable;
  audit: Pick<AuditTable, 'append'>;
  /** The process's policy source, told to drop its snapshot so the change applies at once. */
  policies: Pick<StaticPolicies, 'invalidate' | 'configuredLevel'>;
}

export interface SetOutcome {
  entry: TlsPolicyRecord;
  previous: TlsPolicyRecord | null;
  /** The LACRE_TLS_POLICIES level of the same key, which the entry now replaces. */
  overrides?: StaticTlsLevel;
}

export async function setStaticPolicy(
  deps: StaticPolicyDeps,
  input: { domain: string; level: string; note?: string | null; actor: string },
): Promise<SetOutcome> {
  let outcome: { entry: TlsPolicyRecord; previous: TlsPolicyRecord | null };
  try {
    const key = policyKeyOf(input.domain);
    const level = policyLevelOf(input.level);
    const note = policyNoteOf(input.note);
    outcome = await deps.table.set(key, level, input.actor, note);
  } catch (err) {
    if (err instanceof TlsPolicyInputError) throw new StaticPolicyError('invalid', err.message);
    throw err;
  }
  const { entry, previous } = outcome;
  deps.policies.invalidate();
  const overrides = deps.policies.configuredLevel(entry.domain);
  await deps.audit.append({
    actor: input.actor,
    action: 'tls-policy.set',
    subject: entry.domain,
    detail: {
      level: entry.level,
      previous: previous?.level ?? null,
      ...(overrides === undefined ? {} : { overrides }),
      ...(entry.note === null ? {} : { note: entry.note }),
    },
  });
  return { entry, previous, ...(overrides === undefined ? {} : { overrides }) };
}

/** Removes a table entry; the key falls back to LACRE_TLS_POLICIES or the default. */
export async function removeStaticPolicy(deps: StaticPolicyDeps, input: { domain: string; actor: string }): Promise<TlsPolicyRecord> {
  let key: string;
  try {
    key = policyKeyOf(input.domain);
  } catch (err) {
    if (err instanceof TlsPolicyInputError) throw new StaticPolicyError('invalid', err.message);
    throw err;
  }
  const removed = await deps.table.remove(key);
  if (!removed) {
    const configured = deps.policies.configuredLevel(key);
    if (configured !== undefined) {
      throw new StaticPolicyError(
        'configured',
        `${key}=${configured} is set in LACRE_TLS_POLICIES (tls.policies), not in the policy table: change the configuration, or override it with a table entry`,
      );
    }
    throw new StaticPolicyError('unknown', `no TLS policy for ${key} in the policy table`);
  }
  deps.policies.invalidate();
  await deps.audit.append({
    actor: input.actor,
    action: 'tls-policy.remove',
    subject: key,
    detail: { previous: removed.level, ...(removed.note === null ? {} : { note: removed.note }) },
  });
  return removed;
}
