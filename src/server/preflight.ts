// What `serve` checks before it opens anything, and `config check` runs the same: the files the
// configuration names (CA bundle, HTTPS pair, submission pair) load and belong together, and the
// bind rule holds. A failure is a ConfigError naming the setting; warnings are for settings that
// are valid but probably wrong (config/warnings.ts).
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import { configWarnings } from '../config/warnings.ts';
import { loadListenerCertificate } from '../intake/listener-cert.ts';
import { loadHttpTls } from './https.ts';
import { readCaFile } from '../net/trust.ts';
import type { HttpsOptions } from './http.ts';

export interface Preflight {
  /** The operator's CA bundle (LACRE_CA_FILE), added to the system store. */
  ca: string[];
  https: HttpsOptions | undefined;
  warnings: string[];
}

export async function preflight(config: Config): Promise<Preflight> {
  const ca = extraCasFrom(config);
  const https = loadHttpTls(config.http);
  if (config.submission.tlsCert !== undefined || config.submission.tlsKey !== undefined) {
    // Operator's files only: reading them writes nothing (the generated certificate is made at listen).
    await loadListenerCertificate({
      dataDir: config.dataDir,
      hostname: config.hostname,
      certFile: config.submission.tlsCert,
      keyFile: config.submission.tlsKey,
      name: 'submission',
    });
  }
  return { ca, https, warnings: configWarnings(config) };
}

/** The operator's extra trusted roots (LACRE_CA_FILE) as PEMs, read once per process (see net/trust.ts). */
export function extraCasFrom(config: Config): string[] {
  const path = config.tls.caFile;
  if (path === undefined) return [];
  try {
    return readCaFile(path);
  } catch (err) {
    throw new ConfigError(`LACRE_CA_FILE (tls.caFile) = ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
}
