// The world the benchmarked server points at, and the server itself. Everything is on loopback:
//   - a test CA; the receiving MX `mx.sink.test` presents a certificate from it, and so does
//     Lacre's submission listener (its host name, LACRE_HOSTNAME);
//   - the harness DNS server, Lacre's only resolver (LACRE_DNS_SERVERS), answers
//     mx.sink.test A 127.0.0.1 and nothing else, so no lookup (MTA-STS, TLSA, TLS-RPT) leaves
//     the machine;
//   - recipients @sink.test are routed (LACRE_ROUTES) to the sink under `verify` (certificate
//     chained to LACRE_CA_FILE and naming mx.sink.test); recipients @defer.test are routed to a
//     closed port on 127.0.0.1, so they are accepted and then deferred;
//   - a data dir prepared by the CLI like any deployment: `lacre domains add sender.test`,
//     `lacre domains verify sender.test --force` (DKIM Ed25519 + RSA) and
//     `lacre keys create --name bench --scopes send,read --json`. It is made once and copied for
//     every server started, so each measurement starts from an empty queue.
// No tuning variable is set: every LACRE_* variable in the caller's environment is removed first.
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestCA, type IssuedCert } from '../../test/harness/ca.ts';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { startServeProcess, type ServeProcess } from '../../test/harness/serve-process.ts';
import { freePort } from './util.ts';

export const SENDER_DOMAIN = 'sender.test';
export const SINK_DOMAIN = 'sink.test';
export const SINK_HOST = 'mx.sink.test';
export const DEFER_DOMAIN = 'defer.test';
export const LACRE_HOSTNAME = 'mta.bench.test';
/** The static TLS policy the bench configures for the sink's domain. */
export const TLS_POLICY = 'verify';

const bin = fileURLToPath(new URL('../../bin/lacre.js', import.meta.url));

/** Drops LACRE_* variables inherited from the shell, so the server runs on its defaults. Returns their names. */
export function scrubLacreEnv(): string[] {
  const removed = Object.keys(process.env).filter((k) => k.startsWith('LACRE_'));
  for (const k of removed) delete process.env[k];
  return removed;
}

export interface World {
  dir: string;
  ca: TestCA;
  caFile: string;
  sinkCert: IssuedCert;
  /** The submission listener's certificate, for LACRE_HOSTNAME. */
  submissionCert: IssuedCert;
  dns: FakeDnsServer;
  key: { apiKey: string; secretKey: string };
  /** A port on 127.0.0.1 nothing listens on. */
  closedPort: number;
  /** A fresh copy of the prepared data dir. */
  newDataDir(): string;
  /** The environment a deployment pointed at this world sets, and nothing else. */
  env(dataDir: string, sinkPort: number): Record<string, string>;
  close(): Promise<void>;
}

function runCli(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, LACRE_CONFIG: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`lacre ${args.join(' ')} exited ${code}:\n${err}${out}`));
    });
  });
}

export async function createWorld(): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-bench-'));
  const ca = await TestCA.create();
  const caFile = await ca.writeCaFile(dir);
  const sinkCert = await ca.issue({ names: [SINK_HOST] });
  const submissionCert = await ca.issue({ names: [LACRE_HOSTNAME] });
  const certPath = join(dir, 'submission-cert.pem');
  const keyPath = join(dir, 'submission-key.pem');
  writeFileSync(certPath, submissionCert.chainPem);
  writeFileSync(keyPath, submissionCert.keyPem, { mode: 0o600 });
  const dns = await FakeDnsServer.start();
  dns.add(SINK_HOST, { type: 'A', address: '127.0.0.1' });
  const closedPort = await freePort();

  const base = (dataDir: string, sinkPort: number): Record<string, string> => ({
    LACRE_DATA_DIR: dataDir,
    LACRE_HOSTNAME,
    LACRE_DNS_SERVERS: dns.address,
    LACRE_CA_FILE: caFile,
    LACRE_ROUTES: `${SINK_DOMAIN}=${SINK_HOST}:${sinkPort},${DEFER_DOMAIN}=127.0.0.1:${closedPort}`,
    LACRE_TLS_POLICIES: `${SINK_DOMAIN}=${TLS_POLICY},${DEFER_DOMAIN}=${TLS_POLICY}`,
    LACRE_SUBMISSION_TLS_CERT: certPath,
    LACRE_SUBMISSION_TLS_KEY: keyPath,
  });

  const template = join(dir, 'template');
  const cliEnv = base(template, 25);
  await runCli(['domains', 'add', SENDER_DOMAIN, '--json'], cliEnv);
  await runCli(['domains', 'verify', SENDER_DOMAIN, '--force', '--json'], cliEnv);
  const created = JSON.parse(await runCli(['keys', 'create', '--name', 'bench', '--scopes', 'send,read', '--json'], cliEnv)) as {
    apiKey: string;
    secretKey: string;
  };
  let copies = 0;
  return {
    dir,
    ca,
    caFile,
    sinkCert,
    submissionCert,
    dns,
    key: { apiKey: created.apiKey, secretKey: created.secretKey },
    closedPort,
    newDataDir() {
      const copy = join(dir, `data-${++copies}`);
      cpSync(template, copy, { recursive: true });
      return copy;
    },
    env: base,
    async close() {
      await dns.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startLacre(world: World, dataDir: string, sinkPort: number): Promise<ServeProcess> {
  return startServeProcess(world.env(dataDir, sinkPort), 60_000);
}

/** Removes a data dir made by newDataDir once its server has stopped. */
export function dropDataDir(dataDir: string): void {
  rmSync(dataDir, { recursive: true, force: true });
}
