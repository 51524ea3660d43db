// Option values the CLI parses the same way everywhere, with errors naming the option.
import { CliError } from './errors.ts';

/** An ISO 8601 date (`2026-04-01`, UTC midnight) or date-time; ms since the epoch. */
export function parseTime(option: string, value: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : /^\d{4}-\d{2}-\d{2}T/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) throw new CliError(`${option} ${JSON.stringify(value)} is not a time: expected an ISO 8601 date or date-time, e.g. 2026-04-01 or 2026-04-01T12:00:00Z`);
  return ms;
}

export function parseCount(option: string, value: string, min: number, max: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new CliError(`${option} ${JSON.stringify(value)} is not a whole number from ${min} to ${max}`);
  return n;
}
