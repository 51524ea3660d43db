// policy-lookup/ gathers the evidence TLS policy is decided on (DNSSEC TLSA, MTA-STS, static table);
//
// This file: the operator's static policy for a destination (issue 6, precedence item 4), from two
// places: LACRE_TLS_POLICIES (fixed for the life of the process) and the policy table (changed at
// run time by `lacre policy` or /v1/tls-policies, possibly from another process).
import type { TlsPoliciesTable, TlsPolicyRecord } from '../store/tls-policies-table.ts';
import { decidePolicy, type PolicyDecision, type StaticTlsLevel } from '../tls-policy/levels.ts';

export type StaticPolicyOrigin = 'table' | 'config' | 'default';

export type StaticPolicyDecision = PolicyDecision & { origin: StaticPolicyOrigin };

/** One key as it applies now: a table entry, or a configured entry no table entry replaces. */
export interface ListedPolicy {
  domain: string;
  level: StaticTlsLevel;
  origin: 'table' | 'config';
  /** Table entries only: the LACRE_TLS_POLICIES level of the same key that this entry replaces. */
  overrides?: StaticTlsLevel;
  /** Table entries only. */
  note?: string | null;
  updatedAt?: string;
  updatedBy?: string;
}

export interface StaticPoliciesOptions {
  table: Pick<TlsPoliciesTable, 'levels' | 'list'>;
  /** LACRE_TLS_POLICIES, as parseTlsPolicies returns it (keys already normalised). */
  configured: Map<string, StaticTlsLevel>;
  defaultLevel: StaticTlsLevel;
  /**
   * The longest a change made by another process (the CLI) goes unseen. One small SELECT per
   * period at most, and only while deliveries ask. Changes made through this process call
   * invalidate() and apply at once.
   */
  refreshMs?: number;
  /** Milliseconds clock; tests step it instead of waiting. */
  now?: () => number;
  /** Told after invalidate(), so other copies in this process (the delivery worker's) drop theirs too. */
  onInvalidate?: () => void;
}

export const DEFAULT_REFRESH_MS = 10_000;

interface Snapshot {
  /** Config entries overlaid with table entries; `tableKeys` says which came from the table. */
  merged: Map<string, StaticTlsLevel>;
  tableKeys: Set<string>;
  loadedAt: number;
  generation: number;
}

export class StaticPolicies {
  readonly #table: StaticPoliciesOptions['table'];
  readonly #configured: Map<string, StaticTlsLevel>;
  readonly #defaultLevel: StaticTlsLevel;
  readonly #refreshMs: number;
  readonly #now: () => number;
  readonly #onInvalidate: (() => void) | undefined;
  #snapshot: Snapshot | undefined;
  #loading: { generation: number; promise: Promise<Snapshot> } | undefined;
  /** Bumped by invalidate(): a load begun before it may have read the old table and is not kept. */
  #generation = 0;

  constructor(options: StaticPoliciesOptions) {
    this.#table = options.table;
    this.#configured = new Map(options.configured);
    this.#defaultLevel = options.defaultLevel;
    this.#refreshMs = Math.max(0, options.refreshMs ?? DEFAULT_REFRESH_MS);
    this.#now = options.now ?? Date.now;
    this.#onInvalidate = options.onInvalidate;
  }

  get defaultLevel(): StaticTlsLevel {
    return this.#defaultLevel;
  }

  /**
   * The static level for a destination domain. A table entry replaces the configured entry of the
   * same key: the table is the run-time override, the way an operator changes a policy without a
   * restart (or reverts by removing the table entry). Between different keys, specificity decides
   * as in decidePolicy: the exact domain beats the nearest `.parent`, whichever place each is in.
   * A failure to read the table is thrown, not papered over with the default: the caller defers
   * rather than delivering under a policy weaker than the operator set.
   */
  async decide(domain: string): Promise<StaticPolicyDecision> {
    const snapshot = await this.#current();
    const decision = decidePolicy(domain, snapshot.merged, this.#defaultLevel);
    if (decision.match === undefined) return { ...decision, origin: 'default' };
    return { ...decision, origin: snapshot.tableKeys.has(decision.match) ? 'table' : 'config' };
  }

  /** Forgets the snapshot: the next decide() reads the table. For changes made in this process. */
  invalidate(): void {
    this.#generation++;
    this.#snapshot = undefined;
    this.#onInvalidate?.();
  }

  /**
   * Every key that applies, from both places, read fresh (an operator listing expects what is
   * stored now), sorted by domain with a domain's exact key before its `.parent` key.
   */
  async list(): Promise<ListedPolicy[]> {
    this.invalidate();
    const rows = await this.#table.list();
    const listed: ListedPolicy[] = rows.map((row: TlsPolicyRecord) => {
      const configured = this.#configured.get(row.domain);
      return {
        domain: row.domain,
        level: row.level,
        origin: 'table',
        ...(configured === undefined ? {} : { overrides: configured }),
        note: row.note,
        updatedAt: row.updatedAt,
        updatedBy: row.updatedBy,
      };
    });
    const inTable = new Set(rows.map((r) => r.domain));
    for (const [domain, level] of this.#configured) {
      if (!inTable.has(domain)) listed.push({ domain, level, origin: 'config' });
    }
    const name = (key: string) => (key.startsWith('.') ? key.slice(1) : key);
    const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    return listed.sort((a, b) => compare(name(a.domain), name(b.domain)) || a.domain.length - b.domain.length);
  }

  /** The configured (LACRE_TLS_POLICIES) level of a key, if any. Keys as the table stores them. */
  configuredLevel(key: string): StaticTlsLevel | undefined {
    return this.#configured.get(key);
  }

  async #current(): Promise<Snapshot> {
    const snapshot = this.#snapshot;
    if (snapshot && snapshot.generation === this.#generation && this.#now() - snapshot.loadedAt < this.#refreshMs) {
      return snapshot;
    }
    // One read serves every decide() that arrives while it runs.
    if (this.#loading && this.#loading.generation === this.#generation) return this.#loading.promise;
    const generation = this.#generation;
    const loadedAt = this.#now();
    const promise = this.#table.levels().then((tableLevels) => {
      const merged = new Map(this.#configured);
      for (const [key, level] of tableLevels) merged.set(key, level);
      const next: Snapshot = { merged, tableKeys: new Set(tableLevels.keys()), loadedAt, generation };
      if (generation === this.#generation) this.#snapshot = next;
      return next;
    });
    const loading = { generation, promise };
    this.#loading = loading;
    const clear = () => {
      if (this.#loading === loading) this.#loading = undefined;
    };
    promise.then(clear, clear);
    return promise;
  }
}
