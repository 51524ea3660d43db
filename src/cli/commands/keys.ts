// `lacre keys …`: create, list, disable, enable and delete API keys. The secret key is printed
// once, by `create`; nothing else ever shows it. Every change is audited as the CLI user.
import type { Command } from 'commander';
import { ApiKeys, KeyNameError, type ApiKeyView } from '../../access/api-keys.ts';
import { SCOPES, ScopeError, parseScopes } from '../../access/scopes.ts';
import { CliError, cliActor, print, withStore } from '../context.ts';

export function registerKeyCommands(program: Command): void {
  const keys = program
    .command('keys')
    .description('Manage API keys: HTTP Basic credentials (API key : secret key) with scopes send, read, admin.');

  keys
    .command('create')
    .description('Create an API key and print its secret key once (only a scrypt hash of it is stored).')
    .requiredOption('--name <name>', 'what uses the key, e.g. "billing app"')
    .option('--scopes <list>', `comma-separated scopes: ${SCOPES.join(', ')} (send: submit mail; read: messages, events; admin: keys, domains, policies)`, 'send')
    .option('--json', 'print JSON')
    .action(async (opts: { name: string; scopes: string; json?: boolean }) => {
      const created = await withStore(async (store) => {
        try {
          return await new ApiKeys(store).create({ name: opts.name, scopes: parseScopes(opts.scopes), actor: cliActor() });
        } catch (err) {
          if (err instanceof ScopeError || err instanceof KeyNameError) throw new CliError(err.message);
          throw err;
        }
      });
      print(!!opts.json, created, () =>
        [
          `created API key ${created.apiKey} "${created.name}" with scopes ${created.scopes.join(',')}`,
          `api key:    ${created.apiKey}`,
          `secret key: ${created.secretKey}`,
          'The secret key will not be shown again: store it now.',
        ].join('\n'),
      );
    });

  keys
    .command('list')
    .description('List API keys with their scopes, state and last use (never their secrets).')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const list = await withStore((store) => new ApiKeys(store).list(), 'existing');
      print(!!opts.json, list, () => (list.length === 0 ? 'no API keys' : list.map(describe).join('\n')));
    });

  keys
    .command('disable <key>')
    .description('Disable an API key: requests with it are refused at once, in every running server.')
    .option('--json', 'print JSON')
    .action(async (key: string, opts: { json?: boolean }) => {
      const view = await withStore((store) => new ApiKeys(store).disable(key, cliActor()), 'existing');
      if (!view) throw new CliError(`no API key ${key}`);
      print(!!opts.json, view, () => `disabled ${describe(view)}`);
    });

  keys
    .command('enable <key>')
    .description('Enable a disabled API key again.')
    .option('--json', 'print JSON')
    .action(async (key: string, opts: { json?: boolean }) => {
      const view = await withStore((store) => new ApiKeys(store).enable(key, cliActor()), 'existing');
      if (!view) throw new CliError(`no API key ${key}`);
      print(!!opts.json, view, () => `enabled ${describe(view)}`);
    });

  keys
    .command('delete <key>')
    .description('Delete an API key for good.')
    .option('--json', 'print JSON')
    .action(async (key: string, opts: { json?: boolean }) => {
      const deleted = await withStore((store) => new ApiKeys(store).delete(key, cliActor()), 'existing');
      if (!deleted) throw new CliError(`no API key ${key}`);
      print(!!opts.json, { apiKey: key, deleted: true }, () => `deleted API key ${key}`);
    });
}

function describe(key: ApiKeyView): string {
  return [
    key.apiKey,
    `"${key.name}"`,
    key.scopes.join(','),
    key.disabledAt ? `disabled ${key.disabledAt}` : 'enabled',
    `created ${key.createdAt}`,
    `last used ${key.lastUsedAt ?? 'never'}`,
  ].join('  ');
}
