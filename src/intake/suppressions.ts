// The suppression list as operators manage it: intake refuses sends to a suppressed address (a hard
// bounce put it there, or an operator did); here they list it, add an address and take one off.
// Every change is audited; the audit subject is the address's short keyed hash, the address itself
// only in the sealed detail.
import type { Store } from '../store/store.ts';
import type { SuppressionListing } from '../store/suppressions-table.ts';
import { normalizeAddress } from '../mail/address.ts';
import { addressProblem } from './mailjet-schema.ts';

export class SuppressionError extends Error {
  override name = 'SuppressionError';
}

export class Suppressions {
  readonly #store: Store;
  readonly #now: () => number;

  constructor(store: Store, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  list(options: { limit?: number; offset?: number } = {}): Promise<{ total: number; items: SuppressionListing[] }> {
    return this.#store.suppressions.list(options);
  }

  /** Adds an address; false when it was already suppressed (nothing changes, nothing is audited). */
  async add(address: string, options: { reason?: string; actor: string }): Promise<boolean> {
    const normal = checked(address);
    if ((await this.#store.findSuppressed([normal])).size > 0) return false;
    const at = this.#now();
    const reason = options.reason?.trim() || 'added by an operator';
    // The change and its audit line commit together: an audited list never misses a change.
    await this.#store.engine.transaction(async (tx) => {
      await this.#store.suppressions.addIn(tx, { address: normal, reason, messageId: null, at });
      await this.#store.audit.appendIn(tx, { actor: options.actor, action: 'suppression.add', subject: this.#store.sealer.logTag(normal), detail: { address: normal, reason }, at });
    });
    return true;
  }

  /** Removes an address; false when it was not suppressed. */
  async remove(address: string, options: { actor: string }): Promise<boolean> {
    const normal = checked(address);
    return this.#store.engine.transaction(async (tx) => {
      const removed = await this.#store.suppressions.removeIn(tx, normal);
      if (removed) {
        await this.#store.audit.appendIn(tx, { actor: options.actor, action: 'suppression.remove', subject: this.#store.sealer.logTag(normal), detail: { address: normal }, at: this.#now() });
      }
      return removed;
    });
  }
}

function checked(address: string): string {
  const normal = normalizeAddress(address);
  const problem = addressProblem(normal);
  if (problem) throw new SuppressionError(`${JSON.stringify(address)} is not an email address: ${problem}`);
  return normal;
}
