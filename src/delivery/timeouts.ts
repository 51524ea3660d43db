// The SMTP client's per-stage timeouts and their defaults (RFC 5321 §4.5.3.2), in a module of
// their own without sockets so that configuration can take its defaults from here.

/** Milliseconds per stage. Names match the `delivery.timeouts` configuration. */
export interface Timeouts {
  /** TCP connect. */
  connect: number;
  /** RFC 5321 §4.5.3.2.1: initial 220, 5 min. */
  greeting: number;
  /** EHLO/HELO, STARTTLS, MAIL (§4.5.3.2.2, 5 min), RCPT (§4.5.3.2.3, 5 min), RSET. */
  command: number;
  /** RFC 5321 §4.5.3.2.4: the 354 to DATA, 2 min. */
  dataInit: number;
  /** RFC 5321 §4.5.3.2.5: each block of message data accepted by the socket, 3 min. */
  dataBlock: number;
  /** RFC 5321 §4.5.3.2.6: the reply to the final dot, 10 min. */
  dataDone: number;
  /** The TLS handshake after a 220 to STARTTLS (no RFC figure). Default 60 s. */
  tlsHandshake?: number;
  /** Waiting for the 221 to QUIT before dropping the connection. Default 10 s. */
  quit?: number;
}

export const DEFAULT_TIMEOUTS: Required<Timeouts> = {
  connect: 30_000,
  greeting: 300_000,
  command: 300_000,
  dataInit: 120_000,
  dataBlock: 180_000,
  dataDone: 600_000,
  tlsHandshake: 60_000,
  quit: 10_000,
};
