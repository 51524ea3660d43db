// The `lacre` command line (commander). Thin: every command loads the same configuration and
// calls the same services as the server. Commands with --json print exactly one JSON document on
// stdout; logs and errors go to stderr.
import type { Config } from '../config/schema.ts';
import { formatDuration } from '../config/duration.ts';
import { ENV_SETTINGS } from '../config/load.ts';
import { preflight } from '../server/preflight.ts';
import { createLogger } from '../log/logger.ts';
import { KEYRING_CHECK_MS, loadKeyring, rotateMasterKeyFile, removeRetiredKeyFiles } from '../sealing/keyring.ts';
import { Sealer } from '../sealing/sealer.ts';
import { Store } from '../store/store.ts';
import { eventRules } from '../events/derive.ts';
import { startServer } from '../server/serve.ts';
import { program, config, withStore, print, CliError, openDataDir, runCommandLine } from './context.ts';
// Command groups in their own modules (one per noun):
import { registerWebhookCommands } from './commands/webhooks.ts';
import { registerDomainCommands } from './commands/domains.ts';
import { registerKeyCommands } from './commands/keys.ts';
import { registerPolicyCommands } from './commands/policy.ts';
import { registerPolicyShow } from './commands/policy-show.ts';
import { registerTlsRptCommands } from './commands/tlsrpt.ts';
import { registerMessageCommands } from './commands/messages.ts';
import { registerSuppressionCommands } from './commands/suppressions.ts';
import { registerAuditCommands } from './commands/audit.ts';
import { registerQueueCommands } from './commands/queue.ts';
import { registerSinkCommand } from './commands/sink.ts';

program
  .command('serve')
  .description('Run the service: HTTP API on LACRE_HTTP_HOST:LACRE_HTTP_PORT (127.0.0.1:8080), data in LACRE_DATA_DIR (./data).')
  .action(async () => {
    const cfg = config();
    openDataDir(cfg, 'create');
    const logger = createLogger({ level: cfg.log.level });
    const server = await startServer({ config: cfg, logger });
    const shutdown = (signal: string) => {
      server.stop(signal).then(
        () => process.exit(0),
        (err) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });

program
  .command('queue')
  .description('Queue commands.')
  .command('status')
  .description('Count recipients in each delivery state.')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const counts = await withStore((store) => store.countByState(), 'existing');
    print(!!opts.json, counts, () => Object.entries(counts).map(([k, v]) => `${k.padEnd(10)} ${v}`).join('\n'));
  });

const sealing = program.command('sealing').description('Manage the keys that seal personal data and content at rest.');
sealing
  .command('status')
  .description('Show the current key id and how many stored values each key seals.')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const result = await withStore(async (store) => ({
      currentKeyId: store.sealer.currentKeyId,
      keyIds: store.sealer.keyIds,
      valuesByKey: await store.sealedValuesByKey(),
    }), 'existing');
    print(!!opts.json, result, () =>
      [`current key ${result.currentKeyId}`, ...Object.entries(result.valuesByKey).map(([k, n]) => `  ${k}: ${n} values`)].join('\n'),
    );
  });
sealing
  .command('rotate-key')
  .description('Generate a new master key in the data dir, re-seal every value under it, and remove retired keys no value needs.')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const cfg = config();
    openDataDir(cfg, 'existing');
    const before = loadKeyring(cfg);
    const keyring = rotateMasterKeyFile(before, cfg.dataDir);
    // A server running on this data dir picks the new key up within KEYRING_CHECK_MS; re-sealing
    // after that means nothing it writes under the old key is missed, and the old key is removed
    // only once no value needs it.
    await new Promise((resolve) => setTimeout(resolve, KEYRING_CHECK_MS * 2.5));
    const result = await resealWith(cfg, keyring);
    print(!!opts.json, { previousKeyId: before.current.idHex, ...result }, () =>
      `rotated ${before.current.idHex} -> ${result.currentKeyId}; re-sealed ${result.resealed} values; removed ${result.removedKeyIds.length} retired key(s)`,
    );
  });
sealing
  .command('reseal')
  .description('Re-seal every value not sealed under the current key (after changing LACRE_MASTER_KEY).')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const cfg = config();
    openDataDir(cfg, 'existing');
    const result = await resealWith(cfg, loadKeyring(cfg));
    print(!!opts.json, result, () => `re-sealed ${result.resealed} values under ${result.currentKeyId}`);
  });

async function resealWith(cfg: Config, keyring: ReturnType<typeof loadKeyring>) {
  const store = await Store.open({ dataDir: cfg.dataDir, sealer: new Sealer(keyring), events: eventRules });
  try {
    const resealed = await store.resealAll();
    const stillUsed = new Set(Object.keys(await store.sealedValuesByKey()));
    return { currentKeyId: keyring.current.idHex, resealed, removedKeyIds: removeRetiredKeyFiles(cfg.dataDir, stillUsed) };
  } finally {
    await store.close();
  }
}

program
  .command('config')
  .description('Configuration commands.')
  .command('check')
  .description('Validate the configuration as `serve` does (settings, CA file, TLS certificate pairs) and print every setting, secrets hidden.')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => {
    const cfg = config();
    const { warnings } = await preflight(cfg);
    for (const warning of warnings) process.stderr.write(`lacre: warning: ${warning}\n`);
    const settings = ENV_SETTINGS.map(({ env, path }) => ({ env, setting: path.join('.'), value: shownValue(path, valueAt(cfg, path)) }));
    print(!!opts.json, { settings: Object.fromEntries(settings.map((s) => [s.setting, s.value])), warnings }, () => {
      const width = Math.max(...settings.map((s) => s.env.length));
      return settings.map((s) => `${s.env.padEnd(width)}  ${typeof s.value === 'string' ? s.value : JSON.stringify(s.value)}`).join('\n');
    });
  });

function valueAt(cfg: Config, path: string[]): unknown {
  let node: unknown = cfg;
  for (const key of path) node = node && typeof node === 'object' ? (node as Record<string, unknown>)[key] : undefined;
  return node;
}

/** Secrets as set/not set; durations as operators write them; absent optional settings as "(not set)". */
function shownValue(path: string[], value: unknown): unknown {
  const key = path.join('.');
  if (key === 'masterKey') return value ? '(set)' : '(not set: data dir master.key)';
  if (key === 'retiredMasterKeys') return (value as string[]).length ? `(${(value as string[]).length} set)` : '(none)';
  if (value === undefined) return '(not set)';
  if (typeof value === 'number' && DURATION_SETTINGS.has(key)) return formatDuration(value);
  return value;
}

/** Settings held in milliseconds: shown as durations, the way they are written. */
const DURATION_SETTINGS = new Set(
  ENV_SETTINGS.map((s) => s.path.join('.')).filter((k) => /(Backoff|Age|lease|Interval|Grace|[tT]imeout|timeouts\.)/.test(k)),
);

// Register command groups here, one line each.
registerWebhookCommands(program);
registerDomainCommands(program);
registerKeyCommands(program);
registerPolicyShow(registerPolicyCommands(program));
registerTlsRptCommands(program);
registerMessageCommands(program);
registerSuppressionCommands(program);
registerAuditCommands(program);
registerQueueCommands(program);
registerSinkCommand(program);

await runCommandLine(process.argv);
