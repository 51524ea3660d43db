// Sender domains: the only domains Lacre sends as. Registers a domain and generates its DKIM keys,
// checks its DNS through the configured resolvers, rotates keys, and answers "may this address
// send, and with which keys?" for compose. The CLI and the HTTP API call this same service.
import { createRequire } from 'node:module';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Store } from '../store/store.ts';
import { DuplicateError, type DkimAlgorithm, type DkimKeyRecord, type DomainRecord, type DomainStatus, type NewDkimKey } from '../store/domains-table.ts';
import { uuidv7 } from '../store/ids.ts';
import { DnsError, type Resolver } from '../dns/resolver.ts';
import { nodeStyleResolver } from '../dns/node-style.ts';
import { checkDomain } from '../mail/domain.ts';
import { generateDkimKeyPair } from './dkim-keys.ts';
import { recordsToPublish, returnPathDomain, type PublishedRecord, type SenderSettings } from './dns-records.ts';
import { judgeDomain, lookupKey, lookupsNeeded, type Lookup, type VerificationReport } from './verification.ts';

const require = createRequire(import.meta.url);
const { spf: checkSpf } = require('mailauth/lib/spf/index.js') as {
  spf: (options: Record<string, unknown>) => Promise<{ status: { result: string } }>;
};

export type DomainErrorKind = 'invalid' | 'unknown' | 'exists';

export class DomainError extends Error {
  override name = 'DomainError';
  readonly kind: DomainErrorKind;
  constructor(kind: DomainErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

export interface DomainView {
  domain: string;
  status: DomainRecord['status'];
  createdAt: string;
  verifiedAt: string | null;
  verifiedBy: string | null;
  checkedAt: string | null;
  returnPathDomain: string;
  dkimKeys: Array<Omit<DkimKeyRecord, 'publicKey' | 'createdAt' | 'activatedAt' | 'retireAt'> & {
    createdAt: string;
    activatedAt: string | null;
    retireAt: string | null;
  }>;
  records: PublishedRecord[];
}

export interface VerifyOutcome {
  domain: DomainView;
  /** Null when forced without looking at DNS. */
  report: VerificationReport | null;
  forced: boolean;
  /** Keys signing switched to in this verification (a rotation completed). */
  activated: string[];
}

/** A key the domain signs with now, parsed once and kept while it stays the signing key. */
export interface DomainSigningKey {
  selector: string;
  algorithm: DkimAlgorithm;
  privateKey: KeyObject;
}

/** Why an address may not send. */
export type SenderVerdict =
  | { allowed: true; domain: string; signingKeys: DomainSigningKey[] }
  | { allowed: false; reason: 'unregistered' | 'unverified' | 'invalid'; domain: string; message: string };

export interface SenderDomainsOptions {
  store: Store;
  resolver: Resolver;
  settings: SenderSettings;
  rotationGraceMs: number;
  clock?: () => number;
}

/**
 * How long what checkSender knows of a domain (registered, verified, which keys sign) is used
 * without asking the store again. Writes made through this object take effect at once (they drop
 * the domain from the cache); writes made by another process (`lacre domains rotate-dkim`,
 * `verify`, `remove` from the CLI) are noticed within this time. Noticing costs one read of the
 * domain's row and key states per domain and second; the private keys are only unsealed and
 * parsed again when the set of active keys has changed.
 */
export const SENDER_RECHECK_MS = 1000;
/** Domains (and unregistered names) remembered at most; the oldest go first. */
const SENDER_CACHE_MAX = 10_000;

/** What checkSender needs of one registered domain. */
interface SenderState {
  status: DomainStatus;
  /** Ids of the active keys, in store order: when it changes, the keys are read again. */
  activeKeys: string;
  /** Loaded only while the domain is verified. */
  signingKeys: DomainSigningKey[] | null;
}

interface SenderCacheEntry {
  /** Null: no such domain is registered. */
  state: SenderState | null;
  checkedAt: number;
}

/** The domain's A-label key (../mail/domain.ts), fully qualified, or a DomainError naming what is wrong. */
export function normalizeDomain(input: string): string {
  const check = checkDomain(input);
  if (!check.ok) throw new DomainError('invalid', check.message);
  if (!check.domain.includes('.')) throw new DomainError('invalid', `"${input}" is not a fully qualified domain name (expected e.g. example.com)`);
  return check.domain;
}

export class SenderDomains {
  readonly settings: SenderSettings;
  readonly #store: Store;
  readonly #resolver: Resolver;
  readonly #graceMs: number;
  readonly #clock: () => number;
  readonly #senders = new Map<string, SenderCacheEntry>();
  readonly #loading = new Map<string, Promise<SenderState | null>>();
  /** Bumped by every local write, so a read begun before it does not refill the cache after it. */
  #generation = 0;
  /** Counters for tests and metrics: how often a domain's signing keys were read, and parsed. */
  readonly stats = { signingKeyLoads: 0, keyParses: 0 };

  constructor(options: SenderDomainsOptions) {
    this.#store = options.store;
    this.#resolver = options.resolver;
    this.settings = options.settings;
    this.#graceMs = options.rotationGraceMs;
    this.#clock = options.clock ?? Date.now;
  }

  async add(input: string, actor: string): Promise<DomainView> {
    const domain = normalizeDomain(input);
    const now = this.#clock();
    const keys = this.#newKeyPair(domain, now, [], 'active');
    try {
      await this.#store.domains.insert({ name: domain, createdAt: now, keys });
    } catch (err) {
      if (err instanceof DuplicateError) throw new DomainError('exists', err.message);
      throw err;
    } finally {
      this.#forget(domain);
    }
    await this.#store.audit.append({
      actor,
      action: 'domain.add',
      subject: domain,
      detail: { selectors: keys.map((k) => k.selector) },
      at: now,
    });
    return this.show(domain);
  }

  async list(): Promise<DomainView[]> {
    return (await this.#store.domains.list()).map((d) => this.#view(d));
  }

  async show(input: string): Promise<DomainView> {
    return this.#view(await this.#require(input));
  }

  async remove(input: string, actor: string): Promise<void> {
    const domain = normalizeDomain(input);
    const removed = await this.#store.domains.remove(domain);
    this.#forget(domain);
    if (!removed) throw new DomainError('unknown', `domain ${domain} is not registered`);
    await this.#store.audit.append({ actor, action: 'domain.remove', subject: domain });
  }

  /**
   * Looks the domain's records up and records the verdict. `force` marks the domain verified
   * without DNS (for trials), and says so in the audit log with who did it.
   */
  async verify(input: string, options: { actor: string; force?: boolean }): Promise<VerifyOutcome> {
    const record = await this.#require(input);
    const now = this.#clock();
    if (options.force) {
      await this.#store.domains.recordCheck(record.name, {
        at: now,
        report: { forced: true, by: options.actor },
        status: 'verified',
        verifiedBy: 'force',
      });
      this.#forget(record.name);
      await this.#store.audit.append({
        actor: options.actor,
        action: 'domain.force-verify',
        subject: record.name,
        detail: { previousStatus: record.status },
        at: now,
      });
      return { domain: await this.show(record.name), report: null, forced: true, activated: [] };
    }

    const live = record.keys.filter((k) => k.state !== 'retired');
    const report = await this.#check(record.name, live, record.createdAt);
    // A lookup that failed proves nothing: a SERVFAIL must not take a working domain offline.
    if (report.conclusive) {
      const forcedStays = record.verifiedBy === 'force' && !report.verified;
      await this.#store.domains.recordCheck(record.name, {
        at: now,
        report,
        status: report.verified || forcedStays ? 'verified' : 'pending',
        verifiedBy: report.verified ? 'dns' : forcedStays ? 'force' : null,
      });
    }
    if (report.activate.length > 0) {
      await this.#store.domains.activateKeys(record.name, report.activate, now, now + this.#graceMs);
    }
    await this.#store.domains.retireDue(now);
    this.#forget(record.name);
    await this.#store.audit.append({
      actor: options.actor,
      action: 'domain.verify',
      subject: record.name,
      detail: { verified: report.verified, conclusive: report.conclusive, spf: report.spf, dmarc: report.dmarc.policy, activated: report.activate },
      at: now,
    });
    return { domain: await this.show(record.name), report, forced: false, activated: report.activate };
  }

  /**
   * Starts a key rotation: a new selector pair, published beside the current one. Signing
   * switches when `verify` finds the new records; the old keys retire after the grace period.
   */
  async rotateDkim(input: string, actor: string): Promise<DomainView> {
    const record = await this.#require(input);
    const now = this.#clock();
    // A rotation started again before the last one verified replaces its pending pair.
    const existing = record.keys.map((k) => k.selector);
    const keys = this.#newKeyPair(record.name, now, existing, 'pending');
    await this.#store.domains.replacePending(record.name, keys);
    this.#forget(record.name);
    await this.#store.audit.append({
      actor,
      action: 'domain.rotate-dkim',
      subject: record.name,
      detail: { selectors: keys.map((k) => k.selector) },
      at: now,
    });
    return this.show(record.name);
  }

  /**
   * Re-checks the domains that wait on DNS: a rotation whose new records may now be published, or
   * a domain not yet verified. Run periodically by the server, so signing switches without an
   * operator having to come back; retires keys whose grace period ended.
   */
  async recheckWaiting(actor = 'system'): Promise<VerifyOutcome[]> {
    const outcomes: VerifyOutcome[] = [];
    for (const domain of await this.#store.domains.list()) {
      const waiting = domain.keys.some((k) => k.state === 'pending') || domain.status === 'pending';
      if (waiting) outcomes.push(await this.verify(domain.name, { actor }));
    }
    await this.#store.domains.retireDue(this.#clock());
    return outcomes;
  }

  /**
   * May `address` appear as a sender (From, Sender, envelope)? Its domain, or the closest
   * registered parent (news.example.com under example.com: DMARC's relaxed alignment, RFC 7489
   * §3.1.1), must be registered and verified.
   */
  async checkSender(address: string): Promise<SenderVerdict> {
    const at = address.lastIndexOf('@');
    const raw = at > 0 ? address.slice(at + 1) : '';
    let domain: string;
    try {
      domain = normalizeDomain(raw);
    } catch {
      return { allowed: false, reason: 'invalid', domain: raw, message: `"${address}" has no valid domain` };
    }
    const labels = domain.split('.');
    for (let i = 0; i < labels.length - 1; i++) {
      const candidate = labels.slice(i).join('.');
      const record = await this.#senderState(candidate);
      if (!record) continue;
      if (record.status !== 'verified' || record.signingKeys === null) {
        return {
          allowed: false,
          reason: 'unverified',
          domain: candidate,
          message: `sender domain ${candidate} is registered but not verified: publish its DNS records and run \`lacre domains verify ${candidate}\``,
        };
      }
      return { allowed: true, domain: candidate, signingKeys: record.signingKeys };
    }
    return {
      allowed: false,
      reason: 'unregistered',
      domain,
      message: `sender domain ${domain} is not registered with Lacre: add it with \`lacre domains add ${domain}\` and verify it`,
    };
  }

  /** The domain as checkSender needs it, from the cache while it is fresh (SENDER_RECHECK_MS). */
  #senderState(name: string): Promise<SenderState | null> {
    const now = this.#clock();
    const cached = this.#senders.get(name);
    // A clock that went back (NTP) makes the entry stale rather than fresh for longer.
    if (cached && now >= cached.checkedAt && now - cached.checkedAt < SENDER_RECHECK_MS) return Promise.resolve(cached.state);
    // Concurrent messages from one domain share one read.
    let loading = this.#loading.get(name);
    if (!loading) {
      const started = this.#loadSenderState(name, cached?.state ?? null, now);
      loading = started.finally(() => {
        if (this.#loading.get(name) === started) this.#loading.delete(name);
      });
      this.#loading.set(name, started);
    }
    return loading;
  }

  async #loadSenderState(name: string, previous: SenderState | null, now: number): Promise<SenderState | null> {
    const generation = this.#generation;
    const record = await this.#store.domains.get(name);
    let state: SenderState | null = null;
    if (record) {
      // Read before the keys: if they change in between, the ids are the older ones and the
      // next check reads the keys again.
      const activeKeys = record.keys.filter((k) => k.state === 'active').map((k) => k.id).join(' ');
      let signingKeys: DomainSigningKey[] | null = null;
      if (record.status === 'verified') {
        // Keys whose grace period ended are erased on the way (as often as this check runs).
        await this.#store.domains.retireDue(now);
        signingKeys = previous?.signingKeys && previous.activeKeys === activeKeys ? previous.signingKeys : await this.#readSigningKeys(name);
      }
      state = { status: record.status, activeKeys, signingKeys };
    }
    if (generation === this.#generation) {
      this.#senders.delete(name);
      this.#senders.set(name, { state, checkedAt: now });
      if (this.#senders.size > SENDER_CACHE_MAX) this.#senders.delete(this.#senders.keys().next().value!);
    }
    return state;
  }

  async #readSigningKeys(name: string): Promise<DomainSigningKey[]> {
    this.stats.signingKeyLoads++;
    const stored = await this.#store.domains.signingKeys(name);
    return stored.map((k) => {
      this.stats.keyParses++;
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey(k.privateKeyPem);
      } catch (err) {
        throw new Error(`DKIM key ${k.selector}._domainkey.${name}: unreadable private key (${(err as Error).message})`);
      }
      return { selector: k.selector, algorithm: k.algorithm, privateKey };
    });
  }

  /** After a write to the domain: the next checkSender reads it again. */
  #forget(name: string): void {
    this.#generation++;
    this.#senders.delete(name);
    this.#loading.delete(name);
  }

  async #check(domain: string, keys: DkimKeyRecord[], createdAt: number): Promise<VerificationReport> {
    const needed = lookupsNeeded(domain, keys, this.settings);
    const lookups = new Map<string, Lookup>();
    await Promise.all(
      needed.map(async ([type, name]) => {
        lookups.set(lookupKey(type, name), await this.#lookup(type, name));
      }),
    );
    const rpDomain = returnPathDomain(domain, this.settings);
    const ips = [...this.settings.spfIp4, ...this.settings.spfIp6].filter((ip) => !ip.includes('/'));
    const resolve = nodeStyleResolver(this.#resolver);
    const spfEvaluations = await Promise.all(
      ips.map(async (ip) => {
        try {
          const result = await checkSpf({
            sender: `postmaster@${rpDomain}`,
            ip,
            helo: this.settings.hostname,
            mta: this.settings.hostname,
            resolver: resolve,
            maxElapsedTime: 10_000,
          });
          return { ip, result: result.status.result };
        } catch (err) {
          return { ip, result: `temperror (${(err as Error).message})` };
        }
      }),
    );
    return judgeDomain({ domain, keys, settings: this.settings, createdAt, lookups, spfEvaluations });
  }

  async #lookup(type: 'TXT' | 'MX', name: string): Promise<Lookup> {
    try {
      const values =
        type === 'TXT'
          ? (await this.#resolver.txt(name)).records
          : (await this.#resolver.mx(name)).records.map((r) => `${r.preference} ${r.exchange}`);
      return values.length > 0 ? { status: 'found', values } : { status: 'none' };
    } catch (err) {
      if (err instanceof DnsError && err.code === 'NXDOMAIN') return { status: 'none' };
      return { status: 'error', message: (err as Error).message };
    }
  }

  async #require(input: string): Promise<DomainRecord> {
    const domain = normalizeDomain(input);
    const record = await this.#store.domains.get(domain);
    if (!record) throw new DomainError('unknown', `domain ${domain} is not registered`);
    return record;
  }

  #newKeyPair(domain: string, now: number, taken: string[], state: 'active' | 'pending'): NewDkimKey[] {
    const suffix = nextSelectorSuffix(new Date(now).getUTCFullYear(), taken);
    return (['ed25519', 'rsa'] as const).map((algorithm) => {
      const pair = generateDkimKeyPair(algorithm);
      return {
        id: uuidv7(now),
        selector: `lacre-${algorithm === 'ed25519' ? 'ed' : 'rsa'}-${suffix}`,
        algorithm,
        publicKey: pair.publicKey,
        privateKeyPem: pair.privateKeyPem,
        state,
        createdAt: now,
      };
    });
  }

  #view(record: DomainRecord): DomainView {
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return {
      domain: record.name,
      status: record.status,
      createdAt: new Date(record.createdAt).toISOString(),
      verifiedAt: iso(record.verifiedAt),
      verifiedBy: record.verifiedBy,
      checkedAt: iso(record.checkedAt),
      returnPathDomain: returnPathDomain(record.name, this.settings),
      dkimKeys: record.keys.map((k) => ({
        id: k.id,
        selector: k.selector,
        algorithm: k.algorithm,
        state: k.state,
        createdAt: new Date(k.createdAt).toISOString(),
        activatedAt: iso(k.activatedAt),
        retireAt: iso(k.retireAt),
      })),
      records: recordsToPublish({ domain: record.name, keys: record.keys, settings: this.settings, createdAt: record.createdAt }),
    };
  }
}

/** `2026a`, then `2026b`… the first suffix no selector of the domain uses yet. */
export function nextSelectorSuffix(year: number, taken: string[]): string {
  const used = new Set(taken.map((s) => s.replace(/^lacre-(ed|rsa)-/, '')));
  for (let i = 0; i < 26 * 27; i++) {
    const letters = i < 26 ? String.fromCharCode(97 + i) : String.fromCharCode(97 + Math.floor(i / 26) - 1) + String.fromCharCode(97 + (i % 26));
    const suffix = `${year}${letters}`;
    if (!used.has(suffix)) return suffix;
  }
  throw new Error('no free DKIM selector left for this year');
}

/** The sender settings of a loaded configuration. */
export function senderSettingsFrom(config: {
  hostname: string;
  senders: Omit<SenderSettings, 'hostname'> & { spfInclude?: string };
}): SenderSettings {
  const s = config.senders;
  return {
    hostname: config.hostname,
    returnPathSubdomain: s.returnPathSubdomain,
    returnPathLocalPart: s.returnPathLocalPart,
    ...(s.spfInclude ? { spfInclude: s.spfInclude } : {}),
    spfIp4: s.spfIp4,
    spfIp6: s.spfIp6,
    dmarcRua: s.dmarcRua,
    tlsRptRua: s.tlsRptRua,
  };
}
