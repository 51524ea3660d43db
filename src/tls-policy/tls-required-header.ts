// Reads the RFC 8689 §5 `TLS-Required: No` header field from a message's header block: a sender's
// request to deliver even when the recipient domain's TLS policy cannot be met. Whether it is
// honoured is the engine's decision (tls.allowTlsRequiredNo), not this module's.
// Pure.

/** The end of the header block (the empty line), or the whole buffer when there is no body. */
function headerBlock(content: Buffer): string {
  const crlf = content.indexOf('\r\n\r\n');
  const lf = content.indexOf('\n\n');
  const end = crlf >= 0 && (lf < 0 || crlf < lf) ? crlf : lf >= 0 ? lf : content.length;
  // Header fields are ASCII (RFC 5322 §2.2); latin1 keeps byte offsets and never throws.
  return content.subarray(0, end).toString('latin1');
}

/**
 * True when the message carries `TLS-Required: No` (RFC 8689 §5, ABNF `"TLS-Required:" [FWS] "No"`,
 * case-insensitive, folding allowed). Any other value, or none, is false.
 */
export function hasTlsRequiredNo(content: Buffer): boolean {
  const unfolded = headerBlock(content).replace(/\r?\n[ \t]+/g, ' ');
  for (const line of unfolded.split(/\r?\n/)) {
    const m = /^tls-required[ \t]*:(.*)$/i.exec(line);
    if (m && /^\s*no\s*$/i.test(m[1])) return true;
  }
  return false;
}
