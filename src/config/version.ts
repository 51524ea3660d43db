// Lacre's version, read once from package.json (the one place it is written), for `lacre --version`,
// the server's start-up line and the API's version header.
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function lacreVersion(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cached;
}
