// Small measuring helpers for the benchmark: wall clock in epoch milliseconds (comparable across
// processes), CPU time and peak RSS of a process from /proc (Linux), percentiles, free ports.
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';

export const now = (): number => performance.timeOrigin + performance.now();
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux architecture Node runs on). */
const CLK_TCK = 100;

/** User + system CPU milliseconds of a process so far, from /proc/<pid>/stat (children not included). */
export function cpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

/** CPU milliseconds of the process's children that have exited and were waited for (cutime + cstime). */
export function childrenCpuMs(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
    return ((Number(fields[13]) + Number(fields[14])) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

function statusKb(pid: number, field: 'VmHWM' | 'VmRSS'): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1];
    return kb ? Number(kb) : null;
  } catch {
    return null;
  }
}

/** Peak resident set size (VmHWM) in MiB. */
export const peakRssMiB = (pid: number): number | null => {
  const kb = statusKb(pid, 'VmHWM');
  return kb === null ? null : Math.round(kb / 1024);
};
/** Current resident set size (VmRSS) in MiB. */
export const rssMiB = (pid: number): number | null => {
  const kb = statusKb(pid, 'VmRSS');
  return kb === null ? null : Math.round(kb / 1024);
};

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export const round = (value: number | null, digits = 0): number | null => {
  if (value === null || !Number.isFinite(value)) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

/** A port free right now on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export function median(values: number[]): number | null {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}
