// Mail addresses as lookups compare them. Only the domain part has a canonical form of its own
// (./domain.ts); the local part is compared case-insensitively, see normalizeAddress.
import { domainKey, domainOrUndefined } from './domain.ts';

/**
 * Addresses compare case-insensitively for lookups (suppression, erasure). RFC 5321 §2.4 lets the
 * local part be case-sensitive, but no mainstream receiver treats it so, and treating Bob@ and
 * bob@ as different people would let a suppressed address be mailed again. The domain part is
 * its A-label (RFC 6531 §3.2: a U-label domain is the same domain), so bob@bücher.example and
 * bob@xn--bcher-kva.example are one address.
 */
export function normalizeAddress(address: string): string {
  const lower = address.trim().toLowerCase();
  const at = lower.lastIndexOf('@');
  if (at < 0) return lower;
  const domain = domainOrUndefined(lower.slice(at + 1));
  return domain === undefined ? lower : `${lower.slice(0, at + 1)}${domain}`;
}

/**
 * The domain part of an address as the key the queue groups and delivers by: its A-label, or the
 * lower-cased text when it is not a domain name (delivery then reports it unresolvable); '' without an @.
 */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return '';
  return domainKey(address.slice(at + 1));
}
