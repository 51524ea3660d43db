// TLS for the HTTP API: reads the operator's PEM certificate and key (LACRE_HTTP_TLS_CERT,
// LACRE_HTTP_TLS_KEY) at start-up and checks that they load and belong together, so a wrong file
// is a configuration error naming the setting, not a failed handshake later. Also the bind rule
// (no plain HTTP off loopback).
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import { checkHttpBind, type HttpsOptions } from './http.ts';

/**
 * The HTTPS options for buildHttpServer, or undefined for plain HTTP; throws ConfigError for an
 * unreadable or mismatched pair, and for plain HTTP on a non-loopback address (checkHttpBind).
 */
export function loadHttpTls(http: Config['http']): HttpsOptions | undefined {
  if (http.tlsCert === undefined || http.tlsKey === undefined) {
    checkHttpBind(http.host, false);
    return undefined;
  }
  const cert = readPem(http.tlsCert, 'LACRE_HTTP_TLS_CERT (http.tlsCert)', /-----BEGIN CERTIFICATE-----/, 'PEM certificate');
  const key = readPem(http.tlsKey, 'LACRE_HTTP_TLS_KEY (http.tlsKey)', /-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/, 'PEM private key');
  try {
    // Fails when the key does not match the certificate, or either does not parse.
    createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new ConfigError(
      `LACRE_HTTP_TLS_CERT and LACRE_HTTP_TLS_KEY (http.tlsCert, http.tlsKey) do not make a usable pair: ${(err as Error).message}`,
    );
  }
  return { cert, key };
}

function readPem(path: string, setting: string, marker: RegExp, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${setting} = ${JSON.stringify(path)}: ${(err as Error).message}`);
  }
  if (!marker.test(text)) throw new ConfigError(`${setting} = ${JSON.stringify(path)}: the file holds no ${what}`);
  return text;
}
