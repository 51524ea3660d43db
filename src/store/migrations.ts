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
