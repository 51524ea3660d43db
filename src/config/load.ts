// Builds the configuration from defaults, an optional JSON file (--config or LACRE_CONFIG) and
// LACRE_* environment variables (env wins over the file). An invalid value stops start-up with a
// message naming the setting, where it came from, the value, and what is allowed.
import { readFileSync } from 'node:fs';
import { configSchema, type Config } from './schema.ts';

/** Each environment variable and the setting it overrides; docs/configuration.md lists the same. */
export const ENV_SETTINGS: ReadonlyArray<{ env: string; path: string[]; list?: boolean }> = [
  { env: 'LACRE_DATA_DIR', path: ['dataDir'] },
  { env: 'LACRE_MASTER_KEY', path: ['masterKey'] },
  { env: 'LACRE_RETIRED_MASTER_KEYS', path: ['retiredMasterKeys'], list: true },
  { env: 'LACRE_HOSTNAME', path: ['hostname'] },
  { env: 'LACRE_HTTP_HOST', path: ['http', 'host'] },
  { env: 'LACRE_HTTP_PORT', path: ['http', 'port'] },
  { env: 'LACRE_HTTP_TLS_CERT', path: ['http', 'tlsCert'] },
  { env: 'LACRE_HTTP_TLS_KEY', path: ['http', 'tlsKey'] },
  { env: 'LACRE_LOG_LEVEL', path: ['log', 'level'] },
  { env: 'LACRE_QUEUE_MIN_BACKOFF', path: ['queue', 'minBackoff'] },
  { env: 'LACRE_QUEUE_MAX_BACKOFF', path: ['queue', 'maxBackoff'] },
  { env: 'LACRE_QUEUE_MAX_AGE', path: ['queue', 'maxAge'] },
  { env: 'LACRE_QUEUE_LEASE', path: ['queue', 'lease'] },
  { env: 'LACRE_QUEUE_POLL_INTERVAL', path: ['queue', 'pollInterval'] },
  { env: 'LACRE_QUEUE_CONCURRENCY', path: ['queue', 'concurrency'] },
  { env: 'LACRE_QUEUE_SHUTDOWN_GRACE', path: ['queue', 'shutdownGrace'] },
  { env: 'LACRE_DNS_SERVERS', path: ['dns', 'servers'] },
  { env: 'LACRE_DNS_TIMEOUT', path: ['dns', 'timeout'] },
  { env: 'LACRE_DNSSEC_TRUST_AD', path: ['dns', 'trustAd'] },
  { env: 'LACRE_CA_FILE', path: ['tls', 'caFile'] },
  { env: 'LACRE_TLS_DEFAULT_POLICY', path: ['tls', 'defaultPolicy'] },
  { env: 'LACRE_TLS_POLICIES', path: ['tls', 'policies'] },
  { env: 'LACRE_TLS_ALLOW_TLS_REQUIRED_NO', path: ['tls', 'allowTlsRequiredNo'] },
  { env: 'LACRE_MTA_STS_PORT', path: ['tls', 'mtaSts', 'port'] },
  { env: 'LACRE_MTA_STS_FETCH_TIMEOUT', path: ['tls', 'mtaSts', 'fetchTimeout'] },
  { env: 'LACRE_MTA_STS_REFRESH_INTERVAL', path: ['tls', 'mtaSts', 'refreshInterval'] },
  { env: 'LACRE_TLSRPT_COUNT', path: ['tlsReporting', 'count'] },
  { env: 'LACRE_TLSRPT_ENABLED', path: ['tlsReporting', 'enabled'] },
  { env: 'LACRE_TLSRPT_ORGANIZATION', path: ['tlsReporting', 'organizationName'] },
  { env: 'LACRE_TLSRPT_FROM', path: ['tlsReporting', 'from'] },
  { env: 'LACRE_TLSRPT_CONTACT', path: ['tlsReporting', 'contact'] },
  { env: 'LACRE_TLSRPT_HTTPS_TIMEOUT', path: ['tlsReporting', 'httpsTimeout'] },
  { env: 'LACRE_ROUTES', path: ['delivery', 'routes'] },
  { env: 'LACRE_SMTP_PORT', path: ['delivery', 'smtpPort'] },
  { env: 'LACRE_DELIVERY_DESTINATION_CONCURRENCY', path: ['delivery', 'destinationConcurrency'] },
  { env: 'LACRE_DELIVERY_MAX_MESSAGES_PER_CONNECTION', path: ['delivery', 'maxMessagesPerConnection'] },
  { env: 'LACRE_DELIVERY_IDLE_TIMEOUT', path: ['delivery', 'idleTimeout'] },
  { env: 'LACRE_SMTP_TIMEOUT_CONNECT', path: ['delivery', 'timeouts', 'connect'] },
  { env: 'LACRE_SMTP_TIMEOUT_GREETING', path: ['delivery', 'timeouts', 'greeting'] },
  { env: 'LACRE_SMTP_TIMEOUT_COMMAND', path: ['delivery', 'timeouts', 'command'] },
  { env: 'LACRE_SMTP_TIMEOUT_DATA_INIT', path: ['delivery', 'timeouts', 'dataInit'] },
  { env: 'LACRE_SMTP_TIMEOUT_DATA_BLOCK', path: ['delivery', 'timeouts', 'dataBlock'] },
  { env: 'LACRE_SMTP_TIMEOUT_DATA_DONE', path: ['delivery', 'timeouts', 'dataDone'] },
  { env: 'LACRE_BOUNCE_HOST', path: ['bounces', 'host'] },
  { env: 'LACRE_BOUNCE_PORT', path: ['bounces', 'port'] },
  { env: 'LACRE_SUBMISSION_HOST', path: ['submission', 'host'] },
  { env: 'LACRE_SUBMISSION_PORT', path: ['submission', 'port'] },
  { env: 'LACRE_SUBMISSION_TLS_PORT', path: ['submission', 'tlsPort'] },
  { env: 'LACRE_SUBMISSION_TLS_CERT', path: ['submission', 'tlsCert'] },
  { env: 'LACRE_SUBMISSION_TLS_KEY', path: ['submission', 'tlsKey'] },
  { env: 'LACRE_SUBMISSION_MAX_SIZE', path: ['submission', 'maxSize'] },
  { env: 'LACRE_RETURN_PATH_SUBDOMAIN', path: ['senders', 'returnPathSubdomain'] },
  { env: 'LACRE_RETURN_PATH_LOCAL_PART', path: ['senders', 'returnPathLocalPart'] },
  { env: 'LACRE_SPF_INCLUDE', path: ['senders', 'spfInclude'] },
  { env: 'LACRE_SPF_IP4', path: ['senders', 'spfIp4'], list: true },
  { env: 'LACRE_SPF_IP6', path: ['senders', 'spfIp6'], list: true },
  { env: 'LACRE_DMARC_RUA', path: ['senders', 'dmarcRua'] },
  { env: 'LACRE_TLSRPT_RUA', path: ['senders', 'tlsRptRua'] },
  { env: 'LACRE_DKIM_ROTATION_GRACE', path: ['senders', 'dkimRotationGrace'] },
  { env: 'LACRE_WEBHOOKS_ALLOW_LOOPBACK', path: ['webhooks', 'allowLoopback'] },
  { env: 'LACRE_WEBHOOKS_CONCURRENCY', path: ['webhooks', 'concurrency'] },
  { env: 'LACRE_WEBHOOKS_BATCH_SIZE', path: ['webhooks', 'batchSize'] },
  { env: 'LACRE_WEBHOOKS_TIMEOUT', path: ['webhooks', 'timeout'] },
  { env: 'LACRE_WEBHOOKS_MIN_BACKOFF', path: ['webhooks', 'minBackoff'] },
  { env: 'LACRE_WEBHOOKS_MAX_BACKOFF', path: ['webhooks', 'maxBackoff'] },
  { env: 'LACRE_WEBHOOKS_MAX_AGE', path: ['webhooks', 'maxAge'] },
  { env: 'LACRE_WEBHOOKS_POLL_INTERVAL', path: ['webhooks', 'pollInterval'] },
  { env: 'LACRE_DOMAINS_RECHECK_INTERVAL', path: ['senders', 'recheckInterval'] },
];

/** Settings whose values are secrets: never echoed back in an error message. */
const SECRET_PATHS = new Set(['masterKey', 'retiredMasterKeys']);

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Path given with --config; LACRE_CONFIG is used when absent. */
  file?: string;
}

type Tree = Record<string, unknown>;

export function loadConfig(options: LoadOptions = {}): Config {
  const env = options.env ?? process.env;
  const sources = new Map<string, string>();
  const raw: Tree = {};

  const file = options.file ?? env.LACRE_CONFIG;
  if (file) {
    const fromFile = readConfigFile(file);
    mergeInto(raw, fromFile);
    for (const path of leafPaths(fromFile)) sources.set(path, `${path} in ${file}`);
  }
  for (const { env: name, path, list } of ENV_SETTINGS) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(raw, path, list ? value.split(',').map((v) => v.trim()).filter(Boolean) : value);
    sources.set(path.join('.'), name);
  }

  const parsed = configSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => {
    const path = issue.path.map(String);
    // A list item's error belongs to the list's setting.
    const key = sources.has(path.join('.')) ? path.join('.') : path.filter((p) => !/^\d+$/.test(p)).join('.');
    const source = sources.get(key);
    const setting = source && source !== key ? `${source} (${key || 'config'})` : key || 'config';
    const value = getPath(raw, path);
    const shown = SECRET_PATHS.has(path[0] ?? '') ? '(secret, not shown)' : JSON.stringify(value);
    const allowed = issue.code === 'unrecognized_keys' ? `unknown setting(s) ${issue.keys.join(', ')}` : issue.message;
    return value === undefined ? `${setting}: ${allowed}` : `${setting} = ${shown}: ${allowed}`;
  });
  // One line, however many settings are wrong: errors are read in logs and terminals alike.
  throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
}

function readConfigFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(`config file ${file} must hold a JSON object`);
  }
  return value as Tree;
}

function mergeInto(target: Tree, source: Tree): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (isTree(value) && isTree(existing)) mergeInto(existing, value);
    else target[key] = isTree(value) ? structuredClone(value) : value;
  }
}

function leafPaths(tree: Tree, prefix: string[] = []): string[] {
  return Object.entries(tree).flatMap(([key, value]) =>
    isTree(value) ? leafPaths(value, [...prefix, key]) : [[...prefix, key].join('.')],
  );
}

function setPath(tree: Tree, path: string[], value: unknown): void {
  let node = tree;
  for (const key of path.slice(0, -1)) {
    if (!isTree(node[key])) node[key] = {};
    node = node[key] as Tree;
  }
  node[path[path.length - 1]] = value;
}

function getPath(tree: unknown, path: string[]): unknown {
  let node = tree;
  for (const key of path) {
    if (!node || typeof node !== 'object') return undefined;
    node = (node as Tree)[key];
  }
  return node;
}

function isTree(value: unknown): value is Tree {
  return !!value && typeof value === 'object' && !Array.isArray(value);
}
