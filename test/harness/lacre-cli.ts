// Runs the `lacre` command line as an operator does: bin/lacre.js on the pinned Node, in a child
// process, with no config file (LACRE_CONFIG cleared) and no stack traces (LACRE_DEBUG cleared)
// unless the test sets them. One home for what ten test files had each written for themselves.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const LACRE_BIN = fileURLToPath(new URL('../../bin/lacre.js', import.meta.url));

export interface CliResult {
  /** The exit status; null when the process was killed (the time limit). */
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd?: string;
  /** The child is killed after this long (default 30 s). */
  timeoutMs?: number;
}

function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  return { ...process.env, LACRE_CONFIG: '', LACRE_DEBUG: '', ...env };
}

/** Blocks until the command exits: for tests with nothing else running in this process. */
export function runLacreSync(args: string[], env: Record<string, string> = {}, options: CliOptions = {}): CliResult {
  const result = spawnSync(process.execPath, [LACRE_BIN, ...args], {
    env: childEnv(env),
    encoding: 'utf8',
    timeout: options.timeoutMs ?? 30_000,
    cwd: options.cwd,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/**
 * Lets this process's event loop run meanwhile: for a command beside a server, DNS or HTTPS
 * harness living in the test process (a blocking spawn would starve them and deadlock).
 */
export function runLacre(args: string[], env: Record<string, string> = {}, options: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [LACRE_BIN, ...args], { env: childEnv(env), cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
