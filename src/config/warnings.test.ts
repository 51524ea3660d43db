import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configWarnings, isFqdn } from './warnings.ts';
import { loadConfig } from './load.ts';

const cfg = (env: Record<string, string>) => loadConfig({ env: { LACRE_HOSTNAME: 'mail.example.com', ...env } });

test('host names: a public FQDN passes; single labels, addresses and local names do not', () => {
  for (const n of ['mail.example.com', 'mx1.example.co.uk.', 'xn--bcher-kva.example']) assert.equal(isFqdn(n), true, n);
  for (const n of ['vm', 'localhost', '127.0.0.1', '::1', 'box.local', 'host.localdomain', 'a..b', '-a.example', 'x.home.arpa']) assert.equal(isFqdn(n), false, n);
});

test('warns on a single-label LACRE_HOSTNAME, naming the setting and the fix', () => {
  assert.deepEqual(configWarnings(cfg({})), []);
  const [warning] = configWarnings(cfg({ LACRE_HOSTNAME: 'vm' }));
  assert.match(warning, /^LACRE_HOSTNAME \(hostname\) = "vm" is not a fully qualified domain name; .*set LACRE_HOSTNAME/);
});

test('warns when the default policy sends in plaintext', () => {
  assert.match(configWarnings(cfg({ LACRE_TLS_DEFAULT_POLICY: 'none' })).join('\n'), /plaintext/);
});

test('booleans accept 1/0, true/false, yes/no and on/off in any case, and name the setting otherwise', () => {
  for (const [v, want] of [['TRUE', true], ['Yes', true], ['on', true], ['1', true], ['False', false], ['NO', false], ['off', false], ['0', false]] as const) {
    assert.equal(cfg({ LACRE_DNSSEC_TRUST_AD: v }).dns.trustAd, want, v);
  }
  assert.throws(() => cfg({ LACRE_DNSSEC_TRUST_AD: 'maybe' }), /^ConfigError: invalid configuration: LACRE_DNSSEC_TRUST_AD \(dns\.trustAd\) = "maybe": expected true or false/);
});
