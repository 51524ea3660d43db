// The stages of an outbound SMTP session, named once: the session reports where it failed by
// them, the trouble table decides by them, and attempt records and events carry them.

/** In the order a session passes them (RFC 5321 §3: greeting, EHLO, STARTTLS per RFC 3207, envelope, DATA). */
export const SMTP_STAGES = ['connect', 'greeting', 'ehlo', 'starttls', 'tls', 'mail', 'rcpt', 'data', 'dot', 'message'] as const;
export type SmtpStage = (typeof SMTP_STAGES)[number];

/**
 * Where an attempt on one next hop stopped, as attempt records keep it: a session stage, or
 * before any session: `policy` (the TLS policy refused the hop) or `local` (Lacre's own failure).
 */
export const ATTEMPT_STAGES = [...SMTP_STAGES, 'policy', 'local'] as const;
export type AttemptStage = (typeof ATTEMPT_STAGES)[number];
