// What an SMTP reply means for a recipient: pure classification of reply codes (RFC 5321 §4.2.1)
// and enhanced status codes (RFC 3463). Delivery reads it for the replies of receiving MTAs, intake
// for the Status fields of DSNs; the queue's verdicts take these kinds as they are.

/** RFC 5321 §4.2.1: 2yz done, 4yz try again later, 5yz do not repeat. */
export type ReplyKind = 'delivered' | 'transient' | 'permanent';

export interface ReplyMeaning {
  kind: ReplyKind;
  /** The address itself is bad: later sends to it should be suppressed. */
  hardBounce: boolean;
}

/** The enhanced status code at the start of a reply's text, e.g. "5.1.1", if its class matches the code's. */
export function enhancedCodeOf(code: number, text: string): string | null {
  const match = /^([245])\.(\d{1,3})\.(\d{1,3})\b/.exec(text.trim());
  // RFC 3463 §2: the class must agree with the reply code's first digit.
  if (!match || Number(match[1]) !== Math.floor(code / 100)) return null;
  return `${match[1]}.${match[2]}.${match[3]}`;
}

// RFC 3463 §3.2: X.1.Y is about the address. 5.1.7/5.1.8 concern the sender, not the recipient.
const HARD_ADDRESS = /^5\.1\.(1|2|3|6|10)$/;
// Without an enhanced code, the wording real servers use for a mailbox that does not exist.
const UNKNOWN_USER = /\b(user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|invalid recipient|recipient rejected: user)/i;

export function classifyReply(code: number, enhanced: string | null, text = ''): ReplyMeaning {
  if (code >= 200 && code < 300) return { kind: 'delivered', hardBounce: false };
  if (code >= 500 && code < 600) {
    const hardBounce = enhanced
      ? HARD_ADDRESS.test(enhanced) || enhanced === '5.2.1'
      : (code === 550 || code === 551 || code === 553) && UNKNOWN_USER.test(text);
    return { kind: 'permanent', hardBounce };
  }
  // 4xx, and anything unexpected (a 3xx where none belongs, garbage): try again later.
  return { kind: 'transient', hardBounce: false };
}
