// The readable table.
import type { PhaseResult } from './phases.ts';

const show = (v: number | null | undefined, suffix = '') => (v === null || v === undefined ? '-' : `${v}${suffix}`);

export function printTable(log: (s: string) => void, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  log(line(header));
  log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) log(line(r));
}

export function printPhases(log: (s: string) => void, phases: PhaseResult[]): void {
  printTable(
    log,
    ['scenario', 'msgs', 'delivered', 'accept/s', 'deliv/s', 'p50 ms', 'p99 ms', 'TLS hs', 'sessions', 'CPU ms/msg', 'peak RSS MiB', 'bytes'],
    phases.map((r) => [
      r.label + (r.timedOut ? ' [TIMED OUT]' : '') + (r.failed ? ` [${r.failed} FAILED]` : ''),
      String(r.messages),
      String(r.delivered),
      show(r.acceptPerSec),
      show(r.deliveredPerSec),
      show(r.p50Ms),
      show(r.p99Ms),
      show(r.tlsHandshakes),
      show(r.sinkSessions),
      show(r.cpuMsPerMessage),
      show(r.peakRssMiB),
      show(r.messageBytes),
    ]),
  );
  for (const r of phases) for (const e of r.errors) log(`  ${r.label}: ${e}`);
  for (const r of phases) {
    if (!r.database) continue;
    const threads = Object.entries(r.database).map(([t, s]) => `${t} ${Object.entries(s).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    log(`  ${r.label}, database per message: ${threads.join('; ')}`);
  }
}
