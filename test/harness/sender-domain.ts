// Publishes a sender domain's records (as `lacre domains add` prints them) in the fake DNS server,
// the way a domain owner would at their DNS host.
import type { FakeDnsServer } from './dns-server.ts';
import type { PublishedRecord } from '../../src/domains/dns-records.ts';

export function publishRecords(dns: FakeDnsServer, records: PublishedRecord[], only?: (r: PublishedRecord) => boolean): void {
  for (const record of records) {
    if (only && !only(record)) continue;
    if (record.type === 'TXT') dns.add(record.name, { type: 'TXT', data: record.value });
    else if (record.type === 'MX') {
      const [preference, exchange] = record.value.split(/\s+/);
      dns.add(record.name, { type: 'MX', preference: Number(preference), exchange });
    }
  }
}

/** name → TXT value of the DKIM records, for verifiers that take a record map. */
export function dkimRecordMap(records: PublishedRecord[]): Record<string, string> {
  return Object.fromEntries(records.filter((r) => r.purpose === 'dkim').map((r) => [r.name, r.value]));
}
