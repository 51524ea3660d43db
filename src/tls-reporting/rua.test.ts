import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRuaUri, parseTlsRptRecords, tlsRptName } from './rua.ts';

test('the record lives at _smtp._tls.<domain>', () => {
  assert.equal(tlsRptName('Example.COM.'), '_smtp._tls.example.com');
});

test('a mailto and an https rua are both taken, in order', () => {
  assert.deepEqual(parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:tls@example.com,https://reports.example.net/tlsrpt']), {
    kind: 'rua',
    uris: [
      { scheme: 'mailto', uri: 'mailto:tls@example.com', address: 'tls@example.com' },
      { scheme: 'https', uri: 'https://reports.example.net/tlsrpt', url: 'https://reports.example.net/tlsrpt' },
    ],
  });
});

test('whitespace around delimiters is allowed (field-delim = *WSP ";" *WSP) and a final ";" too', () => {
  const result = parseTlsRptRecords(['v=TLSRPTv1 ;  rua=mailto:a@example.com , mailto:b@example.com ;']);
  assert.equal(result.kind, 'rua');
  assert.deepEqual(result.kind === 'rua' && result.uris.map((u) => u.uri), ['mailto:a@example.com', 'mailto:b@example.com']);
});

test('records that are not TLSRPTv1 are ignored; several TLSRPTv1 records mean none', () => {
  assert.equal(parseTlsRptRecords(['v=spf1 -all', 'v=TLSRPTv1; rua=mailto:a@example.com']).kind, 'rua');
  const two = parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:a@example.com', 'v=TLSRPTv1; rua=mailto:b@example.com']);
  assert.equal(two.kind, 'none');
  assert.match(two.kind === 'none' ? two.reason : '', /2 v=TLSRPTv1 records/);
  assert.equal(parseTlsRptRecords([]).kind, 'none');
  assert.equal(parseTlsRptRecords(['v=spf1 -all']).kind, 'none');
  // The version is case-sensitive (%s in the ABNF) and must be first.
  assert.equal(parseTlsRptRecords(['v=tlsrptv1; rua=mailto:a@example.com']).kind, 'none');
  assert.equal(parseTlsRptRecords(['rua=mailto:a@example.com; v=TLSRPTv1;']).kind, 'none');
});

test('unknown fields are ignored, malformed ones make the record unusable', () => {
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; ext.x=1; rua=mailto:a@example.com']).kind, 'rua');
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:a@example.com; x=a=b']).kind, 'none');
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:a@example.com; nonsense']).kind, 'none');
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; ext=1']).kind, 'none', 'rua is required');
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com']).kind, 'none');
});

test('unknown URI schemes are ignored; a rua with none usable means none', () => {
  const mixed = parseTlsRptRecords(['v=TLSRPTv1; rua=ftp://x.example/a,mailto:a@example.com,http://plain.example/']);
  assert.deepEqual(mixed.kind === 'rua' && mixed.uris.map((u) => u.uri), ['mailto:a@example.com']);
  assert.equal(parseTlsRptRecords(['v=TLSRPTv1; rua=ftp://x.example/a']).kind, 'none');
});

test('mailto addresses are percent-decoded; an encoded comma separates addresses; hfields are dropped', () => {
  assert.deepEqual(parseRuaUri('mailto:tls%2Breports@Example.COM'), [
    { scheme: 'mailto', uri: 'mailto:tls+reports@example.com', address: 'tls+reports@example.com' },
  ]);
  assert.deepEqual(
    parseRuaUri('mailto:a@example.com%2Cb@example.org?subject=hi').map((u) => u.uri),
    ['mailto:a@example.com', 'mailto:b@example.org'],
  );
  assert.deepEqual(parseRuaUri('mailto:%E0%A4%A'), [], 'broken percent-encoding');
  assert.deepEqual(parseRuaUri('mailto:not-an-address'), []);
  assert.deepEqual(parseRuaUri('mailto:a@b@example.com'), []);
  assert.deepEqual(parseRuaUri('mailto:"a b"@example.com'), []);
});

test('https URIs lose their fragment and may not carry credentials', () => {
  assert.deepEqual(parseRuaUri('https://r.example.net:8443/tls?x=1#frag'), [
    { scheme: 'https', uri: 'https://r.example.net:8443/tls?x=1', url: 'https://r.example.net:8443/tls?x=1' },
  ]);
  assert.deepEqual(parseRuaUri('https://user:pw@r.example.net/'), []);
  assert.deepEqual(parseRuaUri('https://'), []);
});

test('duplicates are sent once and a record cannot name more than ten places', () => {
  const many = Array.from({ length: 15 }, (_, i) => `mailto:r${i}@example.com`).join(',');
  const result = parseTlsRptRecords([`v=TLSRPTv1; rua=mailto:r0@example.com,${many}`]);
  assert.equal(result.kind === 'rua' && result.uris.length, 10);
  assert.equal(result.kind === 'rua' && new Set(result.uris.map((u) => u.uri)).size, 10);
});
