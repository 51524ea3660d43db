// How a failure reaches the operator: one line on stderr naming what is wrong and what to do (the
// setting, the path, the command), exit 2 when the operator can fix it (usage, configuration, a file
// or port they chose) and 1 for a runtime failure. A stack only with LACRE_DEBUG=1. The decision is a
// pure table (explainError), tested row by row; main.ts only prints what it returns.
import { ConfigError } from '../config/load.ts';
import { KeyringError } from '../sealing/keyring.ts';
import { SealError } from '../sealing/sealer.ts';

/** A failure the user can fix (bad argument, unknown name, missing data dir): no stack, exit 2. */
export class CliError extends Error {
  override name = 'CliError';
}

export interface Explained {
  /** One line, without the `lacre: ` prefix. */
  line: string;
  /** 2: usage or configuration the operator can fix; 1: the command failed at run time. */
  exitCode: 1 | 2;
}

/** Which setting chose each port, so EADDRINUSE can name the one to change. */
export interface ErrorContext {
  dataDir?: string;
  ports?: ReadonlyArray<{ port: number | undefined; setting: string }>;
}

interface SystemError extends Error {
  code?: string;
  syscall?: string;
  path?: string;
  address?: string;
  port?: number;
  errcode?: number;
  errstr?: string;
}

export function debugWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  return /^(1|true|yes|on)$/i.test(env.LACRE_DEBUG ?? '');
}

type Row = {
  when: (err: SystemError) => boolean;
  explain: (err: SystemError, ctx: ErrorContext) => Explained;
};

const fixable = (line: string): Explained => ({ line, exitCode: 2 });
const runtime = (line: string): Explained => ({ line, exitCode: 1 });
const oneLine = (s: string) => s.replace(/\s*\n\s*/g, '; ');
const listenAt = (err: SystemError) => `${err.address?.includes(':') ? `[${err.address}]` : (err.address ?? '')}:${err.port ?? '?'}`;
const portSetting = (err: SystemError, ctx: ErrorContext) =>
  ctx.ports?.find((p) => p.port === err.port)?.setting ?? 'the port setting (LACRE_HTTP_PORT, LACRE_SUBMISSION_PORT, LACRE_SUBMISSION_TLS_PORT, LACRE_BOUNCE_PORT)';
const pathOf = (err: SystemError) => err.path ?? '(unknown path)';

/** First matching row wins; the last row catches everything. */
const ROWS: Row[] = [
  { when: (e) => e instanceof ConfigError || e instanceof CliError || e instanceof KeyringError, explain: (e) => fixable(oneLine(e.message)) },
  {
    when: (e) => e instanceof SealError && /not in the keyring/.test(e.message),
    explain: (e, ctx) =>
      fixable(
        `${e.message}: this data dir${ctx.dataDir ? ` (${ctx.dataDir})` : ''} was sealed with another master key; ` +
          'set LACRE_MASTER_KEY to that key (or list it in LACRE_RETIRED_MASTER_KEYS), or restore its master.key',
      ),
  },
  {
    when: (e) => e instanceof SealError,
    explain: (e) => runtime(`${e.message}; the database or master key was changed outside Lacre: restore both from the same backup`),
  },
  {
    when: (e) => e.code === 'EADDRINUSE',
    explain: (e, ctx) => fixable(`cannot listen on ${listenAt(e)}: another process already uses it; stop that process or change ${portSetting(e, ctx)}`),
  },
  {
    when: (e) => e.code === 'EACCES' && e.syscall === 'listen',
    explain: (e, ctx) =>
      fixable(`cannot listen on ${listenAt(e)}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE); change ${portSetting(e, ctx)}`),
  },
  {
    when: (e) => e.code === 'EADDRNOTAVAIL',
    explain: (e) => fixable(`cannot listen on ${listenAt(e)}: no such address on this machine; change LACRE_HTTP_HOST, LACRE_SUBMISSION_HOST or LACRE_BOUNCE_HOST`),
  },
  {
    when: (e) => e.code === 'EACCES' || e.code === 'EPERM',
    explain: (e) => fixable(`cannot ${e.syscall ?? 'use'} ${pathOf(e)}: permission denied; fix its owner or mode, or set LACRE_DATA_DIR to a directory this user may write`),
  },
  {
    when: (e) => e.code === 'ENOTDIR',
    explain: (e) => fixable(`${pathOf(e)}: a part of this path is a file, not a directory; set LACRE_DATA_DIR to a directory`),
  },
  {
    when: (e) => e.code === 'EROFS',
    explain: (e) => fixable(`${pathOf(e)} is on a read-only file system; set LACRE_DATA_DIR to a writable directory`),
  },
  {
    when: (e) => e.code === 'ENOENT' && !!e.path,
    explain: (e) => fixable(`${pathOf(e)} does not exist; check the setting that names it (LACRE_DATA_DIR, a TLS file, --config)`),
  },
  {
    when: (e) => e.code === 'ENOSPC',
    explain: (e) => runtime(`no space left on the device holding ${pathOf(e)}; free space, then run the command again (nothing accepted was lost)`),
  },
  { when: (e) => e.code === 'ERR_LACRE_DATABASE_LOCKED', explain: (e) => runtime(e.message) },
  {
    // SQLITE_NOTADB (26) and SQLITE_CORRUPT (11): node:sqlite puts the result code in errcode.
    when: (e) => e.code === 'ERR_SQLITE_ERROR' && (e.errcode === 26 || e.errcode === 11),
    explain: (e, ctx) =>
      runtime(`${ctx.dataDir ? `${ctx.dataDir}/lacre.db` : 'the database'} is damaged or not a Lacre database (${e.errstr ?? e.message}); restore it from a backup`),
  },
  {
    when: () => true,
    explain: (e) => runtime(`${oneLine(e.message || String(e))} (run again with LACRE_DEBUG=1 for the details)`),
  },
];

export function explainError(err: unknown, ctx: ErrorContext = {}): Explained {
  const e: SystemError = err instanceof Error ? err : new Error(String(err));
  return ROWS.find((row) => row.when(e))!.explain(e, ctx);
}
