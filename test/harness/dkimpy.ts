// Second, independent DKIM verifier for tests: dkimpy (Debian's python3-dkim, with python3-nacl for
// Ed25519) run by the system Python, /usr/bin/python3 (a pyenv python3 on PATH lacks it). Key
// records are handed over directly; the script never touches DNS or the network.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface DkimpyResult {
  domain: string;
  selector: string;
  ok: boolean;
  /** dkimpy's exception text when verification raised rather than returned false. */
  error?: string | null;
}

const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./dkimpy-verify.py', import.meta.url));
const TIMEOUT_MS = 10_000;

let available: boolean | undefined;

/** Whether /usr/bin/python3 can import dkim and nacl; checked once. */
export function dkimpyAvailable(): boolean {
  available ??= spawnSync(PYTHON, ['-c', 'import dkim, nacl'], { stdio: 'ignore', timeout: TIMEOUT_MS }).status === 0;
  return available;
}

/**
 * Verifies every DKIM-Signature in `message`, in header order. `records` maps DNS names
 * ("sel._domainkey.example.com") to TXT values; any other name has no record.
 */
export async function verifyWithDkimpy(message: Buffer, records: Record<string, string>): Promise<DkimpyResult[]> {
  if (!dkimpyAvailable()) {
    throw new Error(`dkimpy is missing: ${PYTHON} cannot import dkim and nacl (apt-get install python3-dkim python3-nacl)`);
  }
  return new Promise<DkimpyResult[]>((resolve, reject) => {
    const child = spawn(PYTHON, [SCRIPT], {
      env: { PATH: '/usr/bin:/bin', LACRE_DKIMPY_RECORDS: JSON.stringify(records) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    const finish = (error: Error | null, value?: DkimpyResult[]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(value!);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(new Error(`dkimpy verifier timed out after ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    child.on('error', (e) => finish(e));
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString().trim();
      if (code !== 0) return finish(new Error(`dkimpy verifier exited with ${code}: ${stderr}`));
      try {
        finish(null, JSON.parse(Buffer.concat(out).toString()) as DkimpyResult[]);
      } catch (e) {
        finish(new Error(`dkimpy verifier printed no JSON (${(e as Error).message}): ${stderr}`));
      }
    });
    // The child may exit before reading everything (a crash); that shows up as the exit code.
    child.stdin.on('error', () => {});
    child.stdin.end(message);
  });
}
