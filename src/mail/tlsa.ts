// A TLSA record (RFC 6698 §2.1) as the resolver returns it and DANE matching reads it.

export interface TlsaRecord {
  /** Certificate usage: 2 DANE-TA, 3 DANE-EE are the ones SMTP uses (RFC 7672 §3.1). */
  usage: number;
  /** 0 the full certificate, 1 its SubjectPublicKeyInfo. */
  selector: number;
  /** 0 exact, 1 SHA-256, 2 SHA-512. */
  matchingType: number;
  data: Buffer;
}
