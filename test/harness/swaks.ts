// Runs swaks (the Swiss Army Knife for SMTP, Debian package `swaks`) against a listener on loopback,
// as an independent client: a Perl/OpenSSL SMTP implementation that shares no code with Lacre or
// nodemailer. Asynchronous (spawn with a hard timeout), so a test's own servers keep running while
// it talks to them. Returns swaks's exit code (see `swaks --help`, EXIT CODES) and its transcript.
import { spawn, spawnSync } from 'node:child_process';

const SWAKS = '/usr/bin/swaks';
const SERVER_LINE = /^\s*(?:<- |<~ |<\*\*|<~\*) ?(.*)$/;

let available: boolean | undefined;

/** Whether /usr/bin/swaks runs; checked once. */
export function swaksAvailable(): boolean {
  available ??= spawnSync(SWAKS, ['--version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
  return available;
}

export interface SwaksResult {
  /** swaks's exit code: 0 sent; 23 MAIL refused; 24 no RCPT accepted; 26 refused after DATA; 28 AUTH failed; 29 TLS failed. */
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything swaks printed: `<-` lines are the server's, `->` lines its own (`<~`/`~>` under TLS). */
  transcript: string;
  stderr: string;
  /** The server's reply lines, prefixes removed, in order. */
  serverLines: string[];
}

export interface SwaksOptions {
  server: string;
  port: number;
  /** starttls: require STARTTLS; implicit: TLS on connect (--tlsc); none: plain text. */
  tls: 'starttls' | 'implicit' | 'none';
  /** Trust this CA file and verify the server's certificate against it. */
  caFile?: string;
  /** Name to send in SNI. */
  sni?: string;
  auth?: { user: string; password: string; type?: 'PLAIN' | 'LOGIN' };
  from: string;
  to: string;
  /** Header lines ("Name: value"), replacing swaks's own of the same name. */
  headers?: string[];
  body?: string;
  /** Extra arguments, e.g. ['--quit-after', 'AUTH']. */
  extra?: string[];
  timeoutMs?: number;
}

/** The argument list for `options` (exported so a test can show what it ran). */
export function swaksArgs(options: SwaksOptions): string[] {
  const args = ['--server', options.server, '--port', String(options.port), '--from', options.from, '--to', options.to];
  args.push('--ehlo', 'swaks.client.test', '--timeout', '10');
  if (options.tls === 'starttls') args.push('--tls');
  if (options.tls === 'implicit') args.push('--tls-on-connect');
  if (options.caFile) args.push('--tls-verify', '--tls-ca-path', options.caFile);
  if (options.sni) args.push('--tls-sni', options.sni);
  if (options.auth) {
    args.push('--auth', options.auth.type ?? 'PLAIN', '--auth-user', options.auth.user, '--auth-password', options.auth.password);
    // The secret never appears in the transcript swaks prints.
    args.push('--auth-hide-password');
  }
  // --header replaces a header of swaks's default message of the same name (--add-header would add a second).
  for (const header of options.headers ?? []) args.push('--header', header);
  if (options.body !== undefined) args.push('--body', options.body);
  args.push(...(options.extra ?? []));
  return args;
}

export async function runSwaks(options: SwaksOptions): Promise<SwaksResult> {
  if (!swaksAvailable()) throw new Error(`swaks is missing: ${SWAKS} does not run (apt-get install swaks)`);
  const timeoutMs = options.timeoutMs ?? 20_000;
  return new Promise<SwaksResult>((resolve, reject) => {
    // No inherited environment: swaks reads none of Lacre's settings, and a proxy variable must not
    // send it anywhere but the loopback address it is given.
    const child = spawn(SWAKS, swaksArgs(options), { env: { PATH: '/usr/bin:/bin', LANG: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      if (!settled) {
        settled = true;
        reject(new Error(`swaks timed out after ${timeoutMs} ms:\n${Buffer.concat(out).toString()}`));
      }
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => {
      clearTimeout(timer);
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      const transcript = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      // swaks marks what it received: `<- ` plain, `<~ ` under TLS, `<**`/`<~*` an unexpected reply.
      const serverLines = `${transcript}\n${stderr}`
        .split('\n')
        .map((l) => SERVER_LINE.exec(l.replace(/\r$/, ''))?.[1])
        .filter((l): l is string => l !== undefined);
      resolve({ code, signal, transcript: `${transcript}${stderr ? `\n${stderr}` : ''}`, stderr, serverLines });
    });
  });
}
