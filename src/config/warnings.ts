// Settings that are valid but probably not what the operator wants: said at start-up (serve), by
// `config check` and by `domains add`, never refused. Pure: a table of rows over the configuration.
import { isIP } from 'node:net';
import type { Config } from './schema.ts';

type Row = (cfg: Config) => string | null;

const ROWS: Row[] = [
  // The name goes into EHLO, Message-IDs, DSNs and the SPF/MX records `domains add` prints: a single
  // label (`vm`) or an address resolves nowhere on the Internet (RFC 5321 §4.1.1.1 wants the FQDN).
  (cfg) =>
    isFqdn(cfg.hostname)
      ? null
      : `LACRE_HOSTNAME (hostname) = ${JSON.stringify(cfg.hostname)} is not a fully qualified domain name; EHLO, Message-IDs and the SPF and MX records Lacre prints use it: set LACRE_HOSTNAME to this host's public name (e.g. mail.example.com)`,
  (cfg) =>
    cfg.tls.defaultPolicy === 'none'
      ? 'LACRE_TLS_DEFAULT_POLICY (tls.defaultPolicy) = "none": mail to domains without a policy travels in plaintext; use "may" (the default) or stricter'
      : null,
];

export function configWarnings(cfg: Config): string[] {
  return ROWS.map((row) => row(cfg)).filter((w): w is string => w !== null);
}

export function isFqdn(name: string): boolean {
  const n = name.replace(/\.$/, '');
  if (isIP(n) || !n.includes('.')) return false;
  if (/^(localhost|localdomain)$|\.(localhost|localdomain|local|internal|lan|home\.arpa)$/i.test(n)) return false;
  return n.split('.').every((label) => /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i.test(label));
}
