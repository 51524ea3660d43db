// A memo of DNS answers for lookups that are repeated far more often than the records change:
// `_mta-sts.<domain>` TXT once per delivery batch and TLSA once per MX host per delivery. Each
// answer is kept for its TTL; NXDOMAIN and NODATA for the negative TTL of RFC 2308 §5. A failed
// lookup (SERVFAIL, timeout, refused) is not an answer and is never kept: the next caller asks
// again, so a passing outage or an attacker's dropped packets cannot pin "no record" in place.
// Concurrent lookups of one name share one query (and so, while it runs, its failure).
import { DnsError, normalizeName, type DnsResult, type Resolver } from './resolver.ts';
import type { TlsaRecord } from '../mail/tlsa.ts';

export interface DnsCacheOptions {
  /** Longest any answer is kept, whatever its TTL. Default 1 hour. */
  maxTtlMs?: number;
  /** Shortest time an answer is kept (TTL 0, or a negative answer without SOA). Default 5 s. */
  minTtlMs?: number;
  /** Longest a negative answer (NXDOMAIN, NODATA) is kept. Default 5 minutes. */
  maxNegativeTtlMs?: number;
  /** Names remembered at most; the oldest go first. Default 10 000. */
  maxEntries?: number;
  now?: () => number;
}

type Lookups = Pick<Resolver, 'txt' | 'tlsa'>;

interface Entry {
  expiresAt: number;
  /** The answer, or the NXDOMAIN it was. */
  result?: DnsResult<unknown>;
  nxdomain?: DnsError;
}

export const DNS_CACHE_DEFAULTS = { maxTtlMs: 3_600_000, minTtlMs: 5_000, maxNegativeTtlMs: 300_000, maxEntries: 10_000 } as const;

export class DnsCache implements Lookups {
  readonly #resolver: Lookups;
  readonly #maxTtlMs: number;
  readonly #minTtlMs: number;
  readonly #maxNegativeTtlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<Entry>>();
  /** Counters for tests and metrics: answers served from memory, and lookups that went out. */
  readonly stats = { hits: 0, queries: 0 };

  constructor(resolver: Lookups, options: DnsCacheOptions = {}) {
    this.#resolver = resolver;
    this.#maxTtlMs = options.maxTtlMs ?? DNS_CACHE_DEFAULTS.maxTtlMs;
    this.#minTtlMs = options.minTtlMs ?? DNS_CACHE_DEFAULTS.minTtlMs;
    this.#maxNegativeTtlMs = options.maxNegativeTtlMs ?? DNS_CACHE_DEFAULTS.maxNegativeTtlMs;
    this.#maxEntries = Math.max(1, options.maxEntries ?? DNS_CACHE_DEFAULTS.maxEntries);
    this.#now = options.now ?? Date.now;
  }

  txt(name: string): Promise<DnsResult<string>> {
    return this.#lookup('TXT', name, () => this.#resolver.txt(name)) as Promise<DnsResult<string>>;
  }

  tlsa(name: string): Promise<DnsResult<TlsaRecord>> {
    return this.#lookup('TLSA', name, () => this.#resolver.tlsa(name)) as Promise<DnsResult<TlsaRecord>>;
  }

  async #lookup(type: string, name: string, ask: () => Promise<DnsResult<unknown>>): Promise<DnsResult<unknown>> {
    const key = `${type} ${normalizeName(name)}`;
    const now = this.#now();
    let entry: Entry | null | undefined = this.#entries.get(key);
    // A clock that went back (NTP) does not stretch an entry's life.
    if (entry && (entry.expiresAt <= now || entry.expiresAt - now > this.#maxTtlMs)) {
      this.#entries.delete(key);
      entry = undefined;
    }
    if (entry) {
      this.stats.hits++;
    } else {
      let pending = this.#inflight.get(key);
      if (!pending) {
        const started = this.#ask(key, ask);
        const done = () => {
          if (this.#inflight.get(key) === started) this.#inflight.delete(key);
        };
        started.then(done, done);
        this.#inflight.set(key, started);
        pending = started;
      }
      entry = await pending;
    }
    if (entry.nxdomain) {
      const e = entry.nxdomain;
      const copy = new DnsError(e.code, e.name, e.rrtype);
      if (e.negativeTtl !== undefined) copy.negativeTtl = e.negativeTtl;
      throw copy;
    }
    const result = entry.result!;
    // Callers get their own list: nothing they do to it reaches the next caller.
    return { ...result, records: [...result.records] };
  }

  /** One lookup, remembered unless it failed (anything but NXDOMAIN is thrown, not kept). */
  async #ask(key: string, ask: () => Promise<DnsResult<unknown>>): Promise<Entry> {
    this.stats.queries++;
    let entry: Entry;
    try {
      const result = await ask();
      const negative = result.records.length === 0;
      entry = { expiresAt: this.#now() + this.#keepMs(result.ttl, negative), result };
    } catch (err) {
      if (!(err instanceof DnsError) || err.code !== 'NXDOMAIN') throw err;
      entry = { expiresAt: this.#now() + this.#keepMs(err.negativeTtl, true), nxdomain: err };
    }
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    return entry;
  }

  /**
   * Milliseconds to keep an answer. RFC 2308 §5 says a negative answer without an SOA should not
   * be cached, because caching resolvers could then pass it between each other forever; this memo
   * answers nobody else, so it keeps one for the minimum time, which is what saves a query per
   * delivery to the many domains with no MTA-STS record.
   */
  #keepMs(ttlSeconds: number | undefined, negative: boolean): number {
    const cap = negative ? Math.min(this.#maxNegativeTtlMs, this.#maxTtlMs) : this.#maxTtlMs;
    const ms = ttlSeconds === undefined ? this.#minTtlMs : ttlSeconds * 1000;
    return Math.max(this.#minTtlMs, Math.min(cap, ms));
  }
}
