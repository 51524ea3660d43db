// What every command module shares: the program, configuration loading, a store opened for one
// command, output in text or exactly one JSON document, and the errors that exit with status 2.
import { Command } from 'commander';
import { userInfo } from 'node:os';
import { loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { loadKeyring } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { eventRules } from '../events/derive.ts';

export const program = new Command('lacre')
  .description('Lacre: email delivery whose mail travels sealed.')
  .option('-c, --config <file>', 'JSON configuration file (default: $LACRE_CONFIG); LACRE_* env vars override it')
  .showHelpAfterError()
  .configureOutput({ writeErr: (s) => process.stderr.write(s) });

export function config(): Config {
  return loadConfig({ file: program.opts().config });
}

export async function withStore<T>(fn: (store: Store, cfg: Config) => Promise<T>): Promise<T> {
  const cfg = config();
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

/** A failure the user can fix (bad argument, unknown name): printed without a stack, exit 2. */
export class CliError extends Error {}

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
