// TLS reporting (RFC 8460): the UTC day a report covers. §4.1: a report SHOULD cover one full
// day, 00:00-24:00 UTC. Pure.

export const DAY_MS = 86_400_000;

/** `YYYY-MM-DD`, the UTC day of an instant. */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** True for a real calendar day written `YYYY-MM-DD` (not 2026-02-30). */
export function isDay(text: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(text)) return false;
  const ms = Date.parse(`${text}T00:00:00Z`);
  return Number.isFinite(ms) && utcDay(ms) === text;
}

/** First and last second of a day, as RFC 8460 §4.4's date-range and §5.1's file name use them. */
export function dayBounds(day: string): { startMs: number; endMs: number } {
  if (!isDay(day)) throw new Error(`not a day: ${JSON.stringify(day)} (expected YYYY-MM-DD)`);
  const startMs = Date.parse(`${day}T00:00:00Z`);
  return { startMs, endMs: startMs + DAY_MS - 1000 };
}

/** The day `n` days after (negative: before) `day`. */
export function addDays(day: string, n: number): string {
  return utcDay(dayBounds(day).startMs + n * DAY_MS);
}
