// `lacre messages show|list`: find mail by any id the API returned (message id, MessageUUID,
// MessageID) or by recipient, CustomID, state, destination domain and date.
import type { Command } from 'commander';
import type { AttemptDetail, RecipientState } from '../../store/records.ts';
import { RECIPIENT_STATES } from '../../store/records.ts';
import { MAX_PAGE } from '../../store/message-search.ts';
import { CliError, print, withStore } from '../context.ts';
import { parseCount, parseTime } from '../options.ts';

export function registerMessageCommands(program: Command): void {
  const messages = program.command('messages').description('Find and inspect queued and delivered messages.');

  messages
    .command('show <id>')
    .description('Show a message with each recipient\'s state and every delivery attempt. ID is any id the API returned: the message id, a MessageUUID or a MessageID.')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const view = await withStore(async (store) => {
        const ref = await store.search.resolve(id);
        return ref ? store.getMessage(ref.messageId) : null;
      }, 'existing');
      if (!view) throw new CliError(`no message with id ${id} (expected a message id, a MessageUUID or a MessageID); find one with: lacre messages list`);
      print(!!opts.json, view, () =>
        [
          `message ${view.id}  created ${view.createdAt}  ${view.size} bytes  from ${view.sender ?? '<>'}${view.requireTls ? '  REQUIRETLS' : ''}`,
          ...view.recipients.flatMap((r) => [
            `  ${r.address}  ${r.state}${r.heldAt ? `  held since ${r.heldAt}` : ''}  attempts ${r.attemptCount}` +
              (r.nextAttemptAt ? `  next ${r.nextAttemptAt}` : '') +
              (r.reason ? `  (${r.reason})` : ''),
            ...r.attempts.map((a) => `    ${a.startedAt}  ${a.outcome ?? 'in flight'}  ${describeAttempt(a.detail)}`),
          ]),
        ].join('\n'),
      );
    });

  messages
    .command('list')
    .description('List recipients of messages, newest first, with their ids and states.')
    .option('--recipient <address>', 'only this recipient address')
    .option('--custom-id <id>', 'only messages sent with this CustomID')
    .option('--state <state>', `only recipients in this state (${RECIPIENT_STATES.join(', ')})`)
    .option('--domain <domain>', 'only recipients at this destination domain')
    .option('--since <time>', 'created at or after (ISO 8601 date or time, UTC)')
    .option('--until <time>', 'created before (ISO 8601 date or time, UTC)')
    .option('--limit <n>', `at most this many (1-${MAX_PAGE})`, '50')
    .option('--offset <n>', 'skip this many first (for paging)', '0')
    .option('--json', 'print JSON: {total, count, items}')
    .action(async (opts: { recipient?: string; customId?: string; state?: string; domain?: string; since?: string; until?: string; limit: string; offset: string; json?: boolean }) => {
      if (opts.state !== undefined && !(RECIPIENT_STATES as readonly string[]).includes(opts.state)) {
        throw new CliError(`--state ${JSON.stringify(opts.state)} is not a state: expected one of ${RECIPIENT_STATES.join(', ')}`);
      }
      const query = {
        recipient: opts.recipient,
        customId: opts.customId,
        state: opts.state as RecipientState | undefined,
        domain: opts.domain,
        since: opts.since === undefined ? undefined : parseTime('--since', opts.since),
        until: opts.until === undefined ? undefined : parseTime('--until', opts.until),
        limit: parseCount('--limit', opts.limit, 1, MAX_PAGE),
        offset: parseCount('--offset', opts.offset, 0, Number.MAX_SAFE_INTEGER),
      };
      const page = await withStore((store) => store.search.search(query), 'existing');
      print(!!opts.json, { total: page.total, count: page.items.length, items: page.items }, () =>
        page.items.length === 0
          ? 'no messages match'
          : [
              ...page.items.map((r) => `${r.createdAt}  ${r.messageId}  ${r.recipientId}  ${r.publicId ?? '-'}  ${r.state.padEnd(9)}  ${r.address}${r.customId ? `  CustomID=${r.customId}` : ''}`),
              `${page.items.length} of ${page.total}${page.total > query.offset + page.items.length ? `; next page: --offset ${query.offset + page.items.length}` : ''}`,
            ].join('\n'),
      );
    });
}

/** One line on how an attempt travelled, like Postfix's `tls=` log field. */
function describeAttempt(d: AttemptDetail | null): string {
  if (!d) return '';
  const parts = [];
  if (d.mx) parts.push(`${d.mx}[${d.ip}]:${d.port}`);
  if (d.policy) parts.push(`policy=${d.policy.source}`);
  if (d.tls) {
    parts.push(d.tls.tls ? `tls=${d.tls.protocol} ${d.tls.cipher} ${d.tls.verified ? 'verified' : `unverified(${d.tls.verificationError ?? '?'})`}` : 'tls=none');
    if (d.tls.downgrade) parts.push(`downgrade=${d.tls.downgrade.reason}`);
  }
  if (d.reply) parts.push(`reply=${d.reply.code}${d.reply.enhanced ? ` ${d.reply.enhanced}` : ''}`);
  return parts.join('  ');
}
