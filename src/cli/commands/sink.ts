// `lacre sink`: the local TLS SMTP sink for trying Lacre (src/sink/smtp-sink.ts). Prints one JSON
// line when listening and one per message; stops on SIGINT/SIGTERM.
import type { Command } from 'commander';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { startSink } from '../../sink/smtp-sink.ts';
import { CliError } from '../context.ts';
import { parseCount } from '../options.ts';

export function registerSinkCommand(program: Command): void {
  program
    .command('sink')
    .description('A local SMTP sink with STARTTLS for trying Lacre: accepts every message and prints one JSON line per message (like Postfix smtp-sink).')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port, printed)', '2525')
    .option('--json-log <file>', 'also append each message line to this file')
    .option('--save <dir>', 'keep each message as <n>.eml in this directory')
    .action(async (opts: { host: string; port: string; jsonLog?: string; save?: string }) => {
      const port = parseCount('--port', opts.port, 0, 65_535);
      const certDir = join(tmpdir(), `lacre-sink-${userInfo().uid}`);
      const sink = await startSink({
        host: opts.host,
        port,
        certDir,
        jsonLog: opts.jsonLog,
        saveDir: opts.save,
        onMessage: (m) => process.stdout.write(JSON.stringify(m) + '\n'),
      }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EADDRINUSE') throw new CliError(`${opts.host}:${port} is already in use; pick another with --port`);
        if (err.code === 'EACCES') throw new CliError(`no permission to listen on ${opts.host}:${port}; use a port above 1023 with --port`);
        throw err;
      });
      process.stdout.write(JSON.stringify({ listening: `${sink.host}:${sink.port}`, port: sink.port, certificateSha256: sink.certificateSha256 }) + '\n');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await sink.close();
    });
}
