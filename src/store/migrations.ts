// Versioned schema migrations, applied in order at start-up, each in its own transaction. Never
// edit a migration that has shipped: add a new one. SQL here is portable between SQLite and
// PostgreSQL; `${blob}` stands for the engine's binary type.
import type { SqlEngine } from './engine.ts';

export interface Migration {
  version: number;
  name: string;
  statements: (types: { blob: string }) => string[];
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'queue',
    statements: ({ blob }) => [
      `CREATE TABLE settings (
         name TEXT PRIMARY KEY,
         value_sealed ${blob} NOT NULL
       )`,
      // Personal data and content live only in *_sealed columns; *_hash columns are keyed HMACs.
      `CREATE TABLE messages (
         id TEXT PRIMARY KEY,
         created_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         source TEXT NOT NULL,
         sender_sealed ${blob},
         metadata_sealed ${blob} NOT NULL,
         content_size BIGINT NOT NULL,
         require_tls INTEGER NOT NULL DEFAULT 0
       )`,
      `CREATE TABLE message_contents (
         message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
         content_sealed ${blob} NOT NULL
       )`,
      `CREATE TABLE recipients (
         id TEXT PRIMARY KEY,
         message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
         position INTEGER NOT NULL,
         address_sealed ${blob} NOT NULL,
         address_hash TEXT NOT NULL,
         domain_hash TEXT NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced', 'expired', 'failed')),
         attempt_count INTEGER NOT NULL DEFAULT 0,
         next_attempt_at BIGINT NOT NULL,
         lease_owner TEXT,
         lease_token TEXT,
         lease_expires_at BIGINT,
         reason_sealed ${blob},
         updated_at BIGINT NOT NULL,
         finalized_at BIGINT
       )`,
      `CREATE INDEX recipients_due ON recipients (state, next_attempt_at)`,
      `CREATE INDEX recipients_message ON recipients (message_id, position)`,
      `CREATE INDEX recipients_address ON recipients (address_hash)`,
      // One row per delivery attempt, kept after the recipient is final. The attempt's id is the
      // lease token it ran under, so an attempt cut short by a crash is found and closed later.
      `CREATE TABLE attempts (
         id TEXT PRIMARY KEY,
         recipient_id TEXT NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
         message_id TEXT NOT NULL,
         worker TEXT NOT NULL,
         started_at BIGINT NOT NULL,
         ended_at BIGINT,
         outcome TEXT CHECK (outcome IN ('delivered', 'deferred', 'bounced', 'failed', 'abandoned', 'released')),
         reply_code INTEGER,
         enhanced_code TEXT,
         detail_sealed ${blob}
       )`,
      `CREATE INDEX attempts_recipient ON attempts (recipient_id, started_at)`,
    ],
  },
  {
    version: 2,
    name: 'suppressions',
    statements: ({ blob }) => [
      // Addresses that hard-bounced: later sends to them are refused. Keyed by HMAC only; the
      // reason is sealed because a remote reply may quote the address.
      `CREATE TABLE suppressions (
         address_hash TEXT PRIMARY KEY,
         reason_sealed ${blob} NOT NULL,
         source_message_id TEXT,
         created_at BIGINT NOT NULL
       )`,
    ],
  },
  {
    version: 3,
    name: 'senders-and-access',
    statements: ({ blob }) => [
      // Sender domains are operator configuration (like routes), kept in plaintext so the From
      // domain of every submission can be looked up; the last verification report is sealed
      // because it quotes whatever the domain's DNS answered.
      `CREATE TABLE domains (
         name TEXT PRIMARY KEY,
         created_at BIGINT NOT NULL,
         status TEXT NOT NULL CHECK (status IN ('pending', 'verified')),
         verified_at BIGINT,
         verified_by TEXT,
         checked_at BIGINT,
         check_sealed ${blob}
       )`,
      // DKIM keys: pending (published, not yet seen in DNS) → active (signing) → retiring (still
      // published, no longer signing) → retired (private key erased).
      `CREATE TABLE dkim_keys (
         id TEXT PRIMARY KEY,
         domain TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
         selector TEXT NOT NULL,
         algorithm TEXT NOT NULL CHECK (algorithm IN ('ed25519', 'rsa')),
         public_key TEXT NOT NULL,
         private_key_sealed ${blob},
         state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retiring', 'retired')),
         created_at BIGINT NOT NULL,
         activated_at BIGINT,
         retire_at BIGINT,
         UNIQUE (domain, selector)
       )`,
      // API keys: the secret is stored only as a slow hash (scrypt), never sealed or reversible.
      `CREATE TABLE api_keys (
         id TEXT PRIMARY KEY,
         name TEXT NOT NULL,
         scopes TEXT NOT NULL,
         secret_hash TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         disabled_at BIGINT,
         last_used_at BIGINT
       )`,
      // Who changed what, when. The detail is sealed: it may name people or addresses.
      `CREATE TABLE audit_log (
         id TEXT PRIMARY KEY,
         at BIGINT NOT NULL,
         actor TEXT NOT NULL,
         action TEXT NOT NULL,
         subject TEXT,
         detail_sealed ${blob}
       )`,
      `CREATE INDEX audit_log_at ON audit_log (at)`,
    ],
  },
  {
    version: 4,
    name: 'send-api',
    statements: ({ blob }) => [
      // Mailjet-compatible numeric ids (MessageID): one per recipient, a safe JS integer (< 2^53)
      // from a counter bumped in the same transaction as the insert. Rows queued before this
      // migration have none and are reached through their UUID only.
      `CREATE TABLE counters (
         name TEXT PRIMARY KEY,
         value BIGINT NOT NULL
       )`,
      `INSERT INTO counters (name, value) VALUES ('recipient_public_id', 0)`,
      `ALTER TABLE recipients ADD COLUMN public_id BIGINT`,
      `CREATE UNIQUE INDEX recipients_public_id ON recipients (public_id)`,
      // Idempotency-Key of the send API: the first response to (API key, key) is kept for 24 h and
      // replayed byte for byte. Keyed by an HMAC of both; the response is sealed because it lists
      // recipient addresses. `response_status` is NULL while the first request is still running.
      `CREATE TABLE idempotency_keys (
         id TEXT PRIMARY KEY,
         api_key_id TEXT NOT NULL,
         request_hash TEXT NOT NULL,
         response_status INTEGER,
         response_sealed ${blob},
         created_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL
       )`,
      `CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)`,
    ],
  },
  {
    version: 5,
    name: 'events-and-webhooks',
    statements: ({ blob }) => [
      // What happened to each recipient, written in the verdict's own transaction. The facts are
      // sealed: they hold the address and whatever the remote server replied. The id (uuidv7) is
      // the paging cursor of GET /v1/events; api_key_id is whose webhooks hear of it.
      `CREATE TABLE events (
         id TEXT PRIMARY KEY,
         at BIGINT NOT NULL,
         type TEXT NOT NULL CHECK (type IN ('sent', 'deferred', 'bounce', 'blocked', 'unsub')),
         message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
         recipient_id TEXT,
         api_key_id TEXT,
         payload_sealed ${blob} NOT NULL
       )`,
      `CREATE INDEX events_key ON events (api_key_id, id)`,
      `CREATE INDEX events_message ON events (message_id)`,
      // Webhooks belong to an API key and go with it. URL (may carry a token) and signing secret
      // (must stay reversible to sign with) are sealed.
      `CREATE TABLE webhooks (
         id TEXT PRIMARY KEY,
         api_key_id TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
         url_sealed ${blob} NOT NULL,
         secret_sealed ${blob} NOT NULL,
         event_types TEXT NOT NULL,
         created_at BIGINT NOT NULL,
         disabled_at BIGINT,
         disabled_reason TEXT
       )`,
      `CREATE INDEX webhooks_key ON webhooks (api_key_id)`,
      // The durable outbox: one row per (webhook, event), leased by dispatchers like recipients.
      `CREATE TABLE webhook_deliveries (
         id TEXT PRIMARY KEY,
         webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
         event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
         state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
         attempts INTEGER NOT NULL DEFAULT 0,
         created_at BIGINT NOT NULL,
         next_attempt_at BIGINT NOT NULL,
         lease_owner TEXT,
         lease_token TEXT,
         lease_expires_at BIGINT,
         last_attempt_at BIGINT,
         last_status INTEGER,
         last_error TEXT,
         finished_at BIGINT,
         UNIQUE (webhook_id, event_id)
       )`,
      `CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at)`,
      `CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (lease_token)`,
    ],
  },
  {
    version: 6,
    name: 'static-tls-policies',
    statements: ({ blob }) => [
      // Operator TLS policy per destination, editable at run time (CLI, /v1/tls-policies) beside
      // LACRE_TLS_POLICIES. Operator configuration like routes, so the key is in plaintext; a key
      // may be `.example.com` for every subdomain. The note is free text an operator types (a
      // ticket, a contact's name), so it is sealed like the audit log's detail.
      `CREATE TABLE tls_policies (
         domain TEXT PRIMARY KEY,
         level TEXT NOT NULL CHECK (level IN ('none', 'may', 'encrypt', 'verify', 'dane-only')),
         created_at BIGINT NOT NULL,
         created_by TEXT NOT NULL,
         updated_at BIGINT NOT NULL,
         updated_by TEXT NOT NULL,
         note_sealed ${blob}
       )`,
    ],
  },
  {
    version: 7,
    name: 'mta-sts-cache',
    statements: ({ blob }) => [
      // RFC 8461 §5.1 policy cache. Recipient domains are personal data (the queue keeps only their
      // keyed hash), so rows are found by that hash and the policy itself is sealed.
      `CREATE TABLE mta_sts_policies (
         domain_hash TEXT PRIMARY KEY,
         policy_sealed ${blob} NOT NULL,
         fetched_at BIGINT NOT NULL,
         expires_at BIGINT NOT NULL,
         checked_at BIGINT NOT NULL
       )`,
      `CREATE INDEX mta_sts_policies_expiry ON mta_sts_policies (expires_at)`,
    ],
  },
  {
    version: 8,
    name: 'tls-reporting',
    statements: ({ blob }) => [
      // RFC 8460 aggregate counts per UTC day, recipient domain (keyed hash) and policy applied.
      // policy_key is a keyed hash of the policy's content, so one day can hold several policies
      // for a domain (an MTA-STS id change mid-day); policy_sealed holds the domain name and the
      // policy, the only place the report's policy-domain can be read back from. The `id` key
      // exists because re-sealing walks every sealed column by one key column.
      `CREATE TABLE tlsrpt_policies (
         id TEXT PRIMARY KEY,
         day TEXT NOT NULL,
         domain_hash TEXT NOT NULL,
         policy_key TEXT NOT NULL,
         policy_sealed ${blob} NOT NULL,
         success_count BIGINT NOT NULL DEFAULT 0,
         failure_count BIGINT NOT NULL DEFAULT 0,
         UNIQUE (day, domain_hash, policy_key)
       )`,
      `CREATE TABLE tlsrpt_failures (
         id TEXT PRIMARY KEY,
         day TEXT NOT NULL,
         domain_hash TEXT NOT NULL,
         policy_key TEXT NOT NULL,
         detail_key TEXT NOT NULL,
         detail_sealed ${blob} NOT NULL,
         session_count BIGINT NOT NULL DEFAULT 0,
         UNIQUE (day, domain_hash, policy_key, detail_key)
       )`,
      // One row per (day, domain) report: whether and where it went. `sending` is a claim: a run
      // that finds one younger than the claim window leaves it alone (another process has it);
      // detail_sealed lists the rua URIs already delivered, so a retry never repeats them.
      `CREATE TABLE tlsrpt_reports (
         id TEXT PRIMARY KEY,
         day TEXT NOT NULL,
         domain_hash TEXT NOT NULL,
         report_id TEXT NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'no-rua', 'failed')),
         attempts INTEGER NOT NULL DEFAULT 0,
         detail_sealed ${blob},
         updated_at BIGINT NOT NULL,
         UNIQUE (day, domain_hash)
       )`,
    ],
  },
  {
    version: 9,
    name: 'pending-recipients-index',
    statements: () => [
      // The runner's claim walks pending recipients in due order, skipping saturated sites. A
      // partial index over just the pending rows, ordered by due time, lets it read them in that
      // order without sorting every queued row on each claim (a queue of 100,000 stays cheap).
      `CREATE INDEX recipients_pending ON recipients (next_attempt_at, message_id, position) WHERE state IN ('queued', 'deferred')`,
    ],
  },
  {
    version: 10,
    name: 'tlsrpt-report-leases',
    statements: () => [
      // A report being sent is held by a real lease (store/leases.ts), renewed while it is sent and
      // fencing every write about it, instead of `sending` + updated_at: a run slower than the claim
      // window no longer lets a second run send the same report. `sending` stays the state while held.
      `ALTER TABLE tlsrpt_reports ADD COLUMN lease_owner TEXT`,
      `ALTER TABLE tlsrpt_reports ADD COLUMN lease_token TEXT`,
      `ALTER TABLE tlsrpt_reports ADD COLUMN lease_expires_at BIGINT`,
      // A report a run before this version was sending keeps the 15-minute window it was claimed for.
      `UPDATE tlsrpt_reports SET lease_expires_at = updated_at + 900000 WHERE state = 'sending'`,
    ],
  },
  {
    version: 11,
    name: 'attempt-unknown-outcome',
    statements: ({ blob }) => [
      // RFC 1047: a connection lost after the final dot leaves the outcome unknown (the message may
      // have arrived); such an attempt is recorded as `unknown`, never as a clean deferral. SQLite
      // cannot change a CHECK constraint in place, so the table is rebuilt with its rows.
      `CREATE TABLE attempts_v11 (
         id TEXT PRIMARY KEY,
         recipient_id TEXT NOT NULL REFERENCES recipients(id) ON DELETE CASCADE,
         message_id TEXT NOT NULL,
         worker TEXT NOT NULL,
         started_at BIGINT NOT NULL,
         ended_at BIGINT,
         outcome TEXT CHECK (outcome IN ('delivered', 'deferred', 'unknown', 'bounced', 'failed', 'abandoned', 'released')),
         reply_code INTEGER,
         enhanced_code TEXT,
         detail_sealed ${blob}
       )`,
      `INSERT INTO attempts_v11 (id, recipient_id, message_id, worker, started_at, ended_at, outcome, reply_code, enhanced_code, detail_sealed)
         SELECT id, recipient_id, message_id, worker, started_at, ended_at, outcome, reply_code, enhanced_code, detail_sealed FROM attempts`,
      `DROP TABLE attempts`,
      `ALTER TABLE attempts_v11 RENAME TO attempts`,
      `CREATE INDEX attempts_recipient ON attempts (recipient_id, started_at)`,
    ],
  },
  {
    version: 12,
    name: 'claim-indexes',
    statements: () => [
      // Without statistics the planner preferred recipients_due (state, next_attempt_at) for the
      // claim and sorted every due row on each claim (O(queue)); without it, it reads
      // recipients_pending in due order and stops at the window.
      `DROP INDEX recipients_due`,
      // Per destination, in due order: the claim finds other destinations past a window full of one
      // destination's backlog by a skip scan over this index instead of reading that backlog.
      `CREATE INDEX recipients_pending_domain ON recipients (domain_hash, next_attempt_at, message_id, position) WHERE state IN ('queued', 'deferred')`,
      // Renewals and verdicts find a lease by its token; only leased rows carry one.
      `CREATE INDEX recipients_lease ON recipients (lease_token) WHERE lease_token IS NOT NULL`,
    ],
  },
  {
    version: 13,
    name: 'operator-lookups',
    statements: ({ blob }) => [
      // `messages list --custom-id`: the CustomID is inside the sealed metadata, so a keyed hash
      // beside it finds a message without opening every row (NULL for messages without one).
      `ALTER TABLE messages ADD COLUMN custom_id_hash TEXT`,
      `CREATE INDEX messages_custom_id ON messages (custom_id_hash) WHERE custom_id_hash IS NOT NULL`,
      `CREATE INDEX messages_created ON messages (created_at)`,
      // Suppressions were keyed by hash only, so an operator could not see whom they list; the
      // address is kept sealed beside the hash (NULL for entries made before this migration).
      `ALTER TABLE suppressions ADD COLUMN address_sealed ${blob}`,
      `CREATE INDEX suppressions_created ON suppressions (created_at)`,
    ],
  },
  {
    version: 14,
    name: 'queue-hold',
    statements: () => [
      // `lacre queue hold` (Postfix's `postsuper -h`): a held recipient keeps its state (queued or
      // deferred) and is marked here; its next attempt time is pushed to the end of time, so the
      // claim's index walk never meets it and needs no extra condition. held_remaining_ms is the
      // message's lifetime left when it was held: release gives it back (the expiry clock stops).
      `ALTER TABLE recipients ADD COLUMN held_at BIGINT`,
      `ALTER TABLE recipients ADD COLUMN held_remaining_ms BIGINT`,
    ],
  },
];

export async function migrate(engine: SqlEngine): Promise<number[]> {
  await engine.run(
    `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
  );
  const applied: number[] = [];
  for (const migration of MIGRATIONS) {
    // Checked inside the write transaction so two processes starting at once apply it once.
    const done = await engine.transaction(async (tx) => {
      const row = await tx.get('SELECT version FROM schema_migrations WHERE version = ?', [migration.version]);
      if (row) return true;
      for (const statement of migration.statements({ blob: engine.blobType })) await tx.run(statement);
      await tx.run('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [
        migration.version,
        migration.name,
        Date.now(),
      ]);
      return false;
    });
    if (!done) applied.push(migration.version);
  }
  return applied;
}
