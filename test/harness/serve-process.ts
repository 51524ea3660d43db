// Runs `lacre serve` as a real child process, the way an operator does (bin/lacre.js on the
// pinned Node), configured only through LACRE_* environment variables. For end-to-end tests,
// crash tests and the benchmark.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createServer, type AddressInfo } from 'node:net';
import * as http from 'node:http';
import * as https from 'node:https';

const bin = fileURLToPath(new URL('../../bin/lacre.js', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  pid: number;
  /** The HTTP API's base URL. */
  url: string;
  /** Everything the process wrote so far (JSON log lines). */
  output(): string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL: no chance to clean up. */
  kill(): Promise<void>;
  /** Peak resident set size (VmHWM) in bytes, from /proc, while the process runs. */
  peakRss(): number | null;
  /** The SMTP submission ports and certificate fingerprint, from the "SMTP submission listening" log line (needs log level info). */
  submission(): { starttls: number; implicit: number; fingerprint: string } | null;
}

/** A port free right now on 127.0.0.1 (the server binds it moments later). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** GET url → status, trusting `ca` for HTTPS (fetch cannot be given a CA). */
export function getStatus(url: string, ca?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = (url.startsWith('https:') ? https : http).get(url, { ca, timeout: 5_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
  });
}

export async function startServeProcess(
  env: Record<string, string>,
  timeoutMs = 20_000,
  options: { /** Trusted for the health check when the HTTP API serves HTTPS. */ ca?: string } = {},
): Promise<ServeProcess> {
  const port = env.LACRE_HTTP_PORT ?? String(await freePort());
  const url = `${env.LACRE_HTTP_TLS_CERT ? 'https' : 'http'}://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [bin, 'serve'], {
    // The SMTP submission listeners default to 1587/1465; free ports unless the test chose them,
    // so tests running in parallel never collide (submissionPorts() reads back what was bound).
    env: {
      ...process.env,
      LACRE_CONFIG: '',
      LACRE_LOG_LEVEL: 'info',
      LACRE_SUBMISSION_PORT: '0',
      LACRE_SUBMISSION_TLS_PORT: '0',
      ...env,
      LACRE_HTTP_PORT: port,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const exited = once(child, 'exit');
  const deadline = Date.now() + timeoutMs;
  // Ready means /healthz answers 200, whatever the log level lets through.
  for (;;) {
    const ok = await getStatus(`${url}/healthz`, options.ca).then((status) => status === 200, () => false);
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`lacre serve did not start (exit ${child.exitCode}):\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const exitWithin = async (ms: number) => {
    const timer = new Promise<null>((resolve) => setTimeout(() => resolve(null), ms).unref());
    return Promise.race([exited.then(([code]) => code as number | null), timer]);
  };
  return {
    child,
    pid: child.pid!,
    url,
    output: () => out,
    async stop(ms = 15_000) {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const code = await exitWithin(ms);
      if (child.exitCode === null) {
        child.kill('SIGKILL');
        throw new Error(`lacre serve did not stop within ${ms} ms of SIGTERM`);
      }
      return code;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    submission() {
      for (const line of out.split('\n')) {
        if (!line.includes('"SMTP submission listening"')) continue;
        const entry = JSON.parse(line) as { starttls: number; implicitTls: number; certificate: { sha256: string } };
        return { starttls: entry.starttls, implicit: entry.implicitTls, fingerprint: entry.certificate.sha256 };
      }
      return null;
    },
    peakRss() {
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
        return kb ? Number(kb) * 1024 : null;
      } catch {
        return null;
      }
    },
  };
}
