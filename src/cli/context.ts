// What every command module shares: the program, configuration loading, a store opened for one
// command (read-only commands refuse a missing data dir instead of creating one), output in text or
// exactly one JSON document, and the errors that exit with status 2.
import { Command, CommanderError } from 'commander';
import { userInfo } from 'node:os';
import { loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { eventRules } from '../events/derive.ts';
import { CliError, debugWanted, explainError, type ErrorContext } from './errors.ts';
import { prepareDataDir, type DataDirUse } from './data-dir.ts';
import { lacreVersion } from '../config/version.ts';

export { CliError };

export const program = new Command('lacre')
  .description('Lacre: email delivery whose mail travels sealed.')
  .option('-c, --config <file>', 'JSON configuration file (default: $LACRE_CONFIG); LACRE_* env vars override it')
  .version(lacreVersion(), '-V, --version', 'print the version and exit')
  .showHelpAfterError()
  // Usage errors throw (main.ts turns them into exit 2) instead of commander's process.exit(1);
  // set before any subcommand exists, so every one inherits it.
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

export function config(): Config {
  return loadConfig({ file: program.opts().config });
}

/**
 * Opens the store for one command. `read`: the data dir must already hold a database (a read
 * must never create one); `create`: made when missing, and said so on stderr, since a command run
 * from the wrong directory would otherwise start a second, empty Lacre without a word.
 */
export async function withStore<T>(fn: (store: Store, cfg: Config) => Promise<T>, use: DataDirUse = 'create'): Promise<T> {
  const cfg = config();
  openDataDir(cfg, use);
  const store = await Store.open({ dataDir: cfg.dataDir, sealer: new Sealer(loadKeyring(cfg)), events: eventRules });
  try {
    return await fn(store, cfg);
  } finally {
    await store.close();
  }
}

export function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text() + '\n');
}

/** Prepares the data dir for a command; tells the operator when it had to create one. */
export function openDataDir(cfg: Config, use: DataDirUse): void {
  if (prepareDataDir(cfg.dataDir, use) === 'created' && program.args[0] !== 'serve') {
    process.stderr.write(`lacre: created a new data dir at ${cfg.dataDir} (set LACRE_DATA_DIR to use an existing one)\n`);
  }
}

/** Who runs a command, for the audit log. */
export function cliActor(): string {
  let user = process.env.SUDO_USER || process.env.USER || '';
  try {
    user ||= userInfo().username;
  } catch {
    user ||= String(process.getuid?.() ?? 'unknown');
  }
  return `cli:${user}`;
}

/** Runs the command line; a failure ends as one line on stderr and exit 2 (fixable) or 1 (runtime). */
export async function runCommandLine(argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message (and the help) already; --help and --version end with 0.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    const { line, exitCode } = explainError(err, errorContext());
    process.stderr.write(`lacre: ${line}\n`);
    if (debugWanted()) process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = exitCode;
  }
}

/** What the error table needs to name a setting; empty when the configuration itself is bad. */
function errorContext(): ErrorContext {
  try {
    const cfg = config();
    return {
      dataDir: cfg.dataDir,
      ports: [
        { port: cfg.http.port, setting: 'LACRE_HTTP_PORT (http.port)' },
        { port: cfg.submission.port, setting: 'LACRE_SUBMISSION_PORT (submission.port)' },
        { port: cfg.submission.tlsPort, setting: 'LACRE_SUBMISSION_TLS_PORT (submission.tlsPort)' },
        { port: cfg.bounces.port, setting: 'LACRE_BOUNCE_PORT (bounces.port)' },
      ],
    };
  } catch {
    return {};
  }
}
