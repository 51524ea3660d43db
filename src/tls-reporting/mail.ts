// TLS reporting (RFC 8460): owns counting TLS sessions and building and sending the daily
// TLS-RPT reports.
//
// This file: a report as a mail to a `mailto:` rua (RFC 8460 §5.3), built with nodemailer's
// MailComposer. Pure apart from the composer: bytes in, bytes out. DKIM (§5.3.1 MUST) is compose's.
import MailComposer from 'nodemailer/lib/mail-composer';
import { reportFileName } from './report.ts';

export interface ReportMailInput {
  from: string;
  to: string;
  /** Our host name: `TLS-Report-Submitter` and the file name's sender. */
  submitter: string;
  policyDomain: string;
  day: string;
  reportId: string;
  /** The gzipped report JSON. */
  gz: Buffer;
  date: Date;
  /** Left to compose when absent (it names the signing domain). */
  messageId?: string;
}

/** §5.3 MIME type of a gzipped report. */
export const TLSRPT_GZIP = 'application/tlsrpt+gzip';

export async function buildReportMail(input: ReportMailInput): Promise<Buffer> {
  const filename = reportFileName({ submitter: input.submitter, policyDomain: input.policyDomain, day: input.day, reportId: input.reportId });
  const composer = new MailComposer({
    from: input.from,
    to: input.to,
    // §5.3: "Report Domain: … Submitter: … Report-ID: <…>".
    subject: `Report Domain: ${input.policyDomain} Submitter: ${input.submitter} Report-ID: <${input.reportId}>`,
    date: input.date,
    messageId: input.messageId,
    headers: [
      { key: 'TLS-Report-Domain', value: input.policyDomain },
      { key: 'TLS-Report-Submitter', value: input.submitter },
      // RFC 3834 §5: machine-made, so auto-responders stay quiet.
      { key: 'Auto-Submitted', value: 'auto-generated' },
    ],
    text: `This is an aggregate TLS report (RFC 8460) from ${input.submitter} for ${input.policyDomain}, covering ${input.day} UTC.\r\n`,
    attachments: [
      {
        filename,
        contentType: TLSRPT_GZIP,
        content: input.gz,
        contentDisposition: 'attachment',
        contentTransferEncoding: 'base64',
      },
    ],
    disableFileAccess: true,
    disableUrlAccess: true,
    newline: '\r\n',
  });
  const root = composer.compile();
  // MailComposer makes text + attachment multipart/mixed; §5.3 wants multipart/report with
  // report-type "tlsrpt". Same parts, same order: only the root's type changes.
  root.setHeader('Content-Type', 'multipart/report; report-type="tlsrpt"');
  return spellTlsHeaders(await root.build());
}

// Field names are case-insensitive (RFC 5322 §1.2.2), but nodemailer writes `Tls-Report-…`;
// reports are read by scripts too, so the header section gets the RFC's own spelling.
function spellTlsHeaders(message: Buffer): Buffer {
  const end = message.indexOf('\r\n\r\n');
  const head = message.subarray(0, end).toString('latin1').replace(/^Tls-Report-(Domain|Submitter):/gim, 'TLS-Report-$1:');
  return Buffer.concat([Buffer.from(head, 'latin1'), message.subarray(end)]);
}
