// policy-lookup/ gathers the evidence TLS policy is decided on (DNSSEC TLSA, MTA-STS, static table).
//
// This file: MTA-STS (RFC 8461) for a recipient domain. Reads `_mta-sts.<domain>` with Lacre's
// resolver, fetches https://mta-sts.<domain>/.well-known/mta-sts.txt under the RFC's rules (PKIX,
// TLS 1.2+, no redirects, text/plain, 64 KiB, one minute), and keeps policies in the sealed store
// cache until their max_age runs out. What a policy means for a connection is decided by
// ../tls-policy (pure); this module only finds out what the policy is.
import { ResponseTooLargeError, pinnedRequest } from '../net/https-client.ts';
import { DnsError, type Resolver } from '../dns/resolver.ts';
import type { CachedStsPolicy, MtaStsCache } from '../store/mta-sts-table.ts';
import type { StsEvidence, StsPolicy } from '../tls-policy/evidence.ts';
import { classifyTlsError, type TlsFailure } from '../tls-policy/levels.ts';
import { parseStsPolicy, parseStsTxt } from '../tls-policy/mta-sts.ts';
import { domainOrUndefined } from '../mail/domain.ts';

export const MTA_STS_PATH = '/.well-known/mta-sts.txt';
/** RFC 8461 §3.3 suggests one minute for the whole fetch. */
export const DEFAULT_FETCH_TIMEOUT_MS = 60_000;
/** RFC 8461 §3.3 suggests 64 kilobytes. */
export const MAX_POLICY_BYTES = 64 * 1024;
/** RFC 8461 §3.3: after a failed fetch, wait "five minutes or longer per version ID" before the next. */
export const DEFAULT_FAILURE_HOLD_MS = 5 * 60_000;

// A domain rarely publishes more than two policy hosts; each failed connect costs time from one budget.
const MAX_ADDRESSES = 3;
const MAX_HELD = 10_000;
const REFRESH_BATCH = 1_000;
const REFRESH_CONCURRENCY = 8;

export type StsFailure = Extract<TlsFailure, 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid'>;

const WEBPKI_FAILURES = new Set<TlsFailure>([
  'certificate-expired',
  'certificate-not-yet-valid',
  'certificate-host-mismatch',
  'certificate-not-trusted',
  'validation-failure',
]);

// Connection failures worth trying the next address for; anything later (TLS, HTTP) is the
// policy host's answer and is final.
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ECONNRESET']);

/** The subset of a pino logger this module uses. */
export interface StsLogger {
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface MtaStsPoliciesOptions {
  resolver: Pick<Resolver, 'txt' | 'a' | 'aaaa'>;
  cache: MtaStsCache;
  /** Extra PEM roots, trusted beside Node's bundled and the system's (LACRE_CA_FILE). */
  ca?: string[];
  /** Port of the policy host; 443 except in tests (LACRE_MTA_STS_PORT). */
  httpsPort?: number;
  /** The whole fetch, address lookup to last body byte (LACRE_MTA_STS_TIMEOUT). */
  fetchTimeoutMs?: number;
  /** How long a failed fetch of one (domain, id) is remembered before the next try. 0: never. */
  failureHoldMs?: number;
  now?: () => number;
  logger?: StsLogger;
}

/** `_mta-sts.<domain>` as read: an id, no usable record (with why), or no answer. */
export type StsTxtOutcome =
  | { kind: 'id'; id: string; records: string[] }
  | { kind: 'none'; reason: string; records: string[] }
  | { kind: 'unavailable'; detail: string };

/** What `lacre policy show` prints about a domain's MTA-STS. */
export interface StsShow {
  domain: string;
  evidence: StsEvidence;
  txt: StsTxtOutcome;
  /** The policy file: as just fetched (even when it was refused), or the cached policy's lines. */
  policyText?: string;
}

type FetchOutcome = { ok: true; policy: StsPolicy; text: string } | { ok: false; failure: StsFailure; detail: string; text?: string };

interface Resolution {
  evidence: StsEvidence;
  txt: StsTxtOutcome;
  text?: string;
}

class FetchError extends Error {
  readonly failure: StsFailure;
  readonly text?: string;
  constructor(failure: StsFailure, detail: string, text?: string) {
    super(detail);
    this.failure = failure;
    this.text = text;
  }
}

/** Lower-case A-label without a trailing dot, or undefined for anything that is not a DNS name. */
export function normalizeStsDomain(raw: string): string | undefined {
  const ascii = domainOrUndefined(raw);
  // Room for "_mta-sts." in front within the 253-octet limit; a policy domain is fully qualified.
  return ascii !== undefined && ascii.length <= 253 - 9 && ascii.includes('.') ? ascii : undefined;
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

export class MtaStsPolicies {
  readonly #resolver: Pick<Resolver, 'txt' | 'a' | 'aaaa'>;
  readonly #cache: MtaStsCache;
  readonly #ca: readonly string[];
  readonly #port: number;
  readonly #timeoutMs: number;
  readonly #holdMs: number;
  readonly #now: () => number;
  readonly #logger: StsLogger | undefined;
  readonly #inflight = new Map<string, Promise<Resolution>>();
  // `${domain} ${id}` → a recent failed fetch, so a broken policy host is not asked on every delivery.
  readonly #held = new Map<string, { until: number; failure: StsFailure; detail: string }>();

  constructor(options: MtaStsPoliciesOptions) {
    this.#resolver = options.resolver;
    this.#cache = options.cache;
    // RFC 8461 §3.3: the policy host must present a PKIX-valid certificate (the one trust store, TLS 1.2 at least).
    this.#ca = options.ca ?? [];
    this.#port = options.httpsPort ?? 443;
    this.#timeoutMs = options.fetchTimeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS;
    this.#holdMs = options.failureHoldMs ?? DEFAULT_FAILURE_HOLD_MS;
    this.#now = options.now ?? Date.now;
    this.#logger = options.logger;
  }

  /**
   * The MTA-STS evidence for a recipient domain (RFC 8461 §3, §5). Never throws for DNS or HTTPS
   * trouble: that is evidence too. Concurrent calls for one domain share one lookup and fetch.
   */
  async lookup(domain: string): Promise<StsEvidence> {
    const name = normalizeStsDomain(domain);
    // An address literal or a malformed name has no _mta-sts record to look up.
    if (name === undefined) return { kind: 'none' };
    return (await this.#shared(name)).evidence;
  }

  /** The evidence with what it was decided on: the TXT records and the policy text. */
  async show(domain: string): Promise<StsShow> {
    const name = normalizeStsDomain(domain);
    if (name === undefined) throw new Error(`"${domain}" is not a domain name`);
    const resolution = await this.#shared(name);
    let policyText = resolution.text;
    if (policyText === undefined && resolution.evidence.kind === 'policy') {
      policyText = resolution.evidence.policy.lines.map((l) => `${l}\r\n`).join('');
    }
    return { domain: name, evidence: resolution.evidence, txt: resolution.txt, ...(policyText !== undefined ? { policyText } : {}) };
  }

  /**
   * RFC 8461 §3.3: "MTAs SHOULD proactively refresh cached policies before they expire". Fetches
   * again every cached policy that expires within `withinMs`, whether or not its TXT id changed, so
   * that persistent interference has to last a whole max_age to make a policy lapse (§10). Drops
   * policies that already expired. Returns how many were refreshed.
   */
  async refreshExpiring(withinMs: number): Promise<number> {
    const now = this.#now();
    await this.#cache.deleteExpired(now);
    const due = await this.#cache.expiring(now, now + Math.max(0, withinMs), REFRESH_BATCH);
    let refreshed = 0;
    let next = 0;
    const worker = async () => {
      while (next < due.length) {
        const entry = due[next++];
        if (await this.#refresh(entry)) refreshed++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(REFRESH_CONCURRENCY, due.length) }, worker));
    return refreshed;
  }

  #shared(domain: string): Promise<Resolution> {
    let pending = this.#inflight.get(domain);
    if (!pending) {
      pending = this.#resolve(domain).finally(() => this.#inflight.delete(domain));
      this.#inflight.set(domain, pending);
    }
    return pending;
  }

  async #resolve(domain: string): Promise<Resolution> {
    const [txt, stored] = await Promise.all([this.#txt(domain), this.#cache.get(domain)]);
    const now = this.#now();
    // RFC 8461 §5.1: an expired policy is no policy.
    const cached = stored && stored.expiresAt > now ? stored : undefined;

    if (txt.kind !== 'id') {
      // RFC 8461 §3.3: "if no 'live' policy can be discovered via DNS ... but a valid
      // (non-expired) policy exists in the sender's cache, the sender MUST apply that cached policy."
      // A TXT lookup that failed (SERVFAIL, timeout) is treated the same way: the failure may be
      // an attacker's, and the cache is what survives it.
      return { evidence: cached ? fromCache(cached) : { kind: 'none' }, txt };
    }
    // §3.3: the id is unchanged and the policy unexpired: no fetch.
    if (cached && cached.policy.id === txt.id) return { evidence: fromCache(cached), txt };

    const held = this.#heldFailure(domain, txt.id, now);
    if (held) return { evidence: failedEvidence(cached, held.failure, held.detail), txt };

    const fetched = await this.#fetch(domain, txt.id);
    if (fetched.ok) {
      const evidence = await this.#store(domain, fetched.policy);
      return { evidence, txt, text: fetched.text };
    }
    this.#hold(domain, txt.id, fetched.failure, fetched.detail);
    if (cached) await this.#cache.markChecked(domain, this.#now());
    this.#reportFailure(domain, fetched.failure, fetched.detail, cached);
    return { evidence: failedEvidence(cached, fetched.failure, fetched.detail), txt, ...(fetched.text !== undefined ? { text: fetched.text } : {}) };
  }

  async #refresh(entry: CachedStsPolicy): Promise<boolean> {
    const txt = await this.#txt(entry.domain);
    // RFC 8461 §8.3: a domain leaving MTA-STS removes its TXT record once its policies have run
    // out; a withdrawn or broken record is not a reason to extend the cached one.
    if (txt.kind === 'none') return false;
    // A TXT lookup that failed is no reason not to refresh: the policy host may still answer.
    const id = txt.kind === 'id' ? txt.id : entry.policy.id;
    const fetched = await this.#fetch(entry.domain, id);
    if (fetched.ok) {
      await this.#store(entry.domain, fetched.policy);
      return true;
    }
    this.#hold(entry.domain, id, fetched.failure, fetched.detail);
    await this.#cache.markChecked(entry.domain, this.#now());
    this.#reportFailure(entry.domain, fetched.failure, fetched.detail, entry);
    return false;
  }

  async #store(domain: string, policy: StsPolicy): Promise<StsEvidence> {
    const fetchedAt = this.#now();
    const expiresAt = fetchedAt + policy.maxAge * 1000;
    // A `mode: none` policy is cached too: it is how a domain says "stop" (RFC 8461 §8.3).
    await this.#cache.put({ domain, policy, fetchedAt, expiresAt });
    return { kind: 'policy', policy, fromCache: false, fetchedAt, expiresAt };
  }

  // RFC 8461 §3.3: "MTAs SHOULD alert administrators ... when such refresh fails, unless the cached
  // policy mode is 'none'". The domain is personal data: named only at debug level.
  #reportFailure(domain: string, failure: StsFailure, detail: string, cached: CachedStsPolicy | undefined): void {
    if (!this.#logger) return;
    this.#logger.debug({ event: 'mta-sts.fetch-failed', domain, failure, detail }, 'MTA-STS policy fetch failed');
    if (cached && cached.policy.mode !== 'none') {
      this.#logger.warn({ event: 'mta-sts.refresh-failed', failure, mode: cached.policy.mode }, 'MTA-STS policy refresh failed; the cached policy stays in force until it expires');
    }
  }

  #heldFailure(domain: string, id: string, now: number): { failure: StsFailure; detail: string } | undefined {
    const key = `${domain} ${id}`;
    const held = this.#held.get(key);
    if (!held) return undefined;
    if (held.until > now) return held;
    this.#held.delete(key);
    return undefined;
  }

  #hold(domain: string, id: string, failure: StsFailure, detail: string): void {
    if (this.#holdMs <= 0) return;
    const key = `${domain} ${id}`;
    this.#held.delete(key);
    // Oldest first out: Map iteration follows insertion order.
    while (this.#held.size >= MAX_HELD) this.#held.delete(this.#held.keys().next().value!);
    this.#held.set(key, { until: this.#now() + this.#holdMs, failure, detail });
  }

  async #txt(domain: string): Promise<StsTxtOutcome> {
    try {
      const { records } = await this.#resolver.txt(`_mta-sts.${domain}`);
      const parsed = parseStsTxt(records);
      return 'id' in parsed ? { kind: 'id', id: parsed.id, records } : { kind: 'none', reason: parsed.reason, records };
    } catch (err) {
      if (err instanceof DnsError && err.code === 'NXDOMAIN') return { kind: 'none', reason: 'no _mta-sts TXT record (NXDOMAIN)', records: [] };
      return { kind: 'unavailable', detail: describe(err) };
    }
  }

  /** Fetches and parses the policy, never throwing. */
  async #fetch(domain: string, id: string): Promise<FetchOutcome> {
    const host = `mta-sts.${domain}`;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new FetchError('sts-policy-fetch-error', `fetching https://${host}${MTA_STS_PATH} timed out after ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
    try {
      const addresses = await abortable(this.#addresses(host), controller.signal);
      let lastError: unknown;
      for (const address of addresses.slice(0, MAX_ADDRESSES)) {
        try {
          const text = await this.#get(host, address, controller.signal);
          const parsed = parseStsPolicy(text, id);
          if ('error' in parsed) return { ok: false, failure: 'sts-policy-invalid', detail: `policy at https://${host}${MTA_STS_PATH}: ${parsed.error}`, text };
          return { ok: true, policy: parsed.policy, text };
        } catch (err) {
          lastError = err;
          const code = (err as { code?: unknown }).code;
          if (controller.signal.aborted || !(typeof code === 'string' && CONNECT_ERRORS.has(code))) break;
        }
      }
      throw lastError;
    } catch (err) {
      const reason = controller.signal.aborted ? controller.signal.reason : err;
      if (reason instanceof FetchError) return { ok: false, failure: reason.failure, detail: reason.message, ...(reason.text !== undefined ? { text: reason.text } : {}) };
      const tlsFailure = classifyTlsError(reason);
      if (WEBPKI_FAILURES.has(tlsFailure)) {
        return { ok: false, failure: 'sts-webpki-invalid', detail: `https://${host}: ${tlsFailure}: ${describe(reason)}` };
      }
      return { ok: false, failure: 'sts-policy-fetch-error', detail: `https://${host}${MTA_STS_PATH}: ${describe(reason)}` };
    } finally {
      clearTimeout(timer);
    }
  }

  /** A, then AAAA, through Lacre's resolver: never the system's. */
  async #addresses(host: string): Promise<string[]> {
    let first: unknown;
    for (const family of ['a', 'aaaa'] as const) {
      try {
        const { records } = await this.#resolver[family](host);
        if (records.length > 0) return records;
      } catch (err) {
        // NXDOMAIN for A is NXDOMAIN for AAAA too.
        if (err instanceof DnsError && err.code === 'NXDOMAIN') throw new FetchError('sts-policy-fetch-error', `${host} does not exist (NXDOMAIN)`);
        first ??= err;
      }
    }
    throw new FetchError('sts-policy-fetch-error', first ? `no address for ${host}: ${describe(first)}` : `${host} has no A or AAAA record`);
  }

  async #get(host: string, address: string, signal: AbortSignal): Promise<string> {
    const url = `https://${host}${MTA_STS_PATH}`;
    let response;
    try {
      response = await pinnedRequest(
        { host, address, port: this.#port },
        {
          method: 'GET',
          path: MTA_STS_PATH,
          headers: { accept: 'text/plain' },
          ca: this.#ca,
          timeoutMs: this.#timeoutMs,
          maxBodyBytes: MAX_POLICY_BYTES,
          signal,
          checkHead: ({ status, headers }) => {
            // RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"; only 200 carries a policy.
            if (status >= 300 && status < 400) {
              throw new FetchError('sts-policy-fetch-error', `${url} answered HTTP ${status} (redirect to ${headers.location ?? 'nowhere'}); redirects are not followed (RFC 8461 §3.3)`);
            }
            if (status !== 200) throw new FetchError('sts-policy-fetch-error', `${url} answered HTTP ${status}`);
            // RFC 8461 §3.2: the policy is served as text/plain; parameters such as charset are fine.
            const type = headers['content-type'];
            if (mediaType(type) !== 'text/plain') {
              throw new FetchError('sts-policy-invalid', `${url} served Content-Type ${type === undefined ? '(none)' : JSON.stringify(type)}, not text/plain`);
            }
          },
        },
      );
    } catch (err) {
      if (err instanceof ResponseTooLargeError) throw new FetchError('sts-policy-invalid', `policy at ${url} is larger than ${MAX_POLICY_BYTES} bytes`);
      throw err;
    }
    try {
      // §3.2 allows UTF-8 in extension values; anything that is not UTF-8 is not a policy.
      return new TextDecoder('utf-8', { fatal: true }).decode(response.body);
    } catch {
      throw new FetchError('sts-policy-invalid', `policy at ${url} is not UTF-8 text`);
    }
  }
}

function fromCache(cached: CachedStsPolicy): StsEvidence {
  return { kind: 'policy', policy: cached.policy, fromCache: true, fetchedAt: cached.fetchedAt, expiresAt: cached.expiresAt };
}

// RFC 8461 §3.3/§5.1: with an unexpired cached policy the cache stays in force (the failure is still
// reported); without one, delivery goes on as if there were no policy, and the failure is reported.
function failedEvidence(cached: CachedStsPolicy | undefined, failure: StsFailure, detail: string): StsEvidence {
  if (cached) return { ...(fromCache(cached) as Extract<StsEvidence, { kind: 'policy' }>), refreshFailure: { failure, detail } };
  return { kind: 'failed', failure, detail };
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}
