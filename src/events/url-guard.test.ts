import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { FakeDnsServer } from '../../test/harness/dns-server.ts';
import { Resolver } from '../dns/resolver.ts';
import { classifyAddress, resolverLookup, vetWebhookUrl, WebhookUrlError, type HostLookup } from './url-guard.ts';

let dns: FakeDnsServer;
let lookup: HostLookup;

before(async () => {
  dns = await FakeDnsServer.start();
  dns.add('public.hooks.test', { type: 'A', address: '93.184.216.34' });
  dns.add('internal.hooks.test', { type: 'A', address: '10.1.2.3' });
  dns.add('metadata.hooks.test', { type: 'A', address: '169.254.169.254' });
  dns.add('mixed.hooks.test', { type: 'A', address: '93.184.216.34' }, { type: 'AAAA', address: 'fd00::1' });
  dns.add('local.hooks.test', { type: 'A', address: '127.0.0.1' });
  dns.add('v6.hooks.test', { type: 'AAAA', address: '2606:2800:220:1:248:1893:25c8:1946' });
  lookup = resolverLookup(new Resolver({ servers: [dns.address], timeoutMs: 1_000, tries: 1 }));
});
after(async () => {
  await dns.close();
});

test('addresses are classified by RFC 6890 ranges, IPv6 forms embedding IPv4 by the IPv4 address', () => {
  const cases: Array<[string, string]> = [
    ['93.184.216.34', 'public'],
    ['10.0.0.1', 'private'],
    ['172.16.5.4', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['127.0.0.1', 'loopback'],
    ['127.9.9.9', 'loopback'],
    ['169.254.169.254', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['192.0.2.1', 'reserved'],
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['fc00::1', 'unique-local'],
    ['fdff:ffff::1', 'unique-local'],
    ['fe80::1%eth0', 'link-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    ['::ffff:93.184.216.34', 'public'],
    ['64:ff9b::a00:1', 'private'],
    ['2002:c0a8:0101::1', 'private'],
    ['2001:db8::1', 'reserved'],
    ['2606:2800:220:1:248:1893:25c8:1946', 'public'],
  ];
  for (const [address, kind] of cases) assert.equal(classifyAddress(address), kind, address);
});

test('webhook URLs to private, link-local, unique-local, mapped and rebinding-prone hosts are refused with the reason', async () => {
  const refused: Array<[string, RegExp]> = [
    ['https://10.0.0.1/hook', /10\.0\.0\.1, a private address/],
    ['https://169.254.169.254/latest/meta-data', /169\.254\.169\.254, a link-local address/],
    ['https://192.168.10.20:8443/', /a private address/],
    ['https://[fc00::1]/', /fc00::1, a unique-local \(fc00::\/7\) address/],
    ['https://[fd12:3456::1]/', /unique-local/],
    ['https://[::ffff:10.0.0.1]/', /a private address/],
    ['https://[fe80::1]/', /link-local/],
    ['https://0.0.0.0/', /unspecified/],
    ['https://[::]/', /unspecified/],
    ['https://224.0.0.1/', /multicast/],
    ['https://internal.hooks.test/hook', /internal\.hooks\.test resolves to 10\.1\.2\.3, a private address/],
    ['https://metadata.hooks.test/', /resolves to 169\.254\.169\.254, a link-local address/],
    ['https://mixed.hooks.test/', /resolves to fd00::1, a unique-local/],
    ['http://public.hooks.test/hook', /http:\/\/ is allowed only for loopback receivers: use https:\/\//],
    ['http://93.184.216.34/hook', /http:\/\/ is allowed only for loopback/],
    ['ftp://public.hooks.test/', /ftp: URLs are not allowed/],
    ['https://user:pw@public.hooks.test/', /must not carry credentials/],
    ['https://nxdomain.hooks.test/', /nxdomain\.hooks\.test does not resolve/],
    ['not a url', /is not an absolute URL/],
    // The WHATWG parser normalises other spellings of private addresses before we look.
    ['https://0x0a.0.0.1/', /10\.0\.0\.1, a private address/],
    ['https://167772161/', /10\.0\.0\.1, a private address/],
  ];
  for (const [url, message] of refused) {
    await assert.rejects(vetWebhookUrl(url, { lookup }), (err: unknown) => err instanceof WebhookUrlError && message.test(err.message), url);
  }
});

test('public https URLs pass with their resolved addresses; loopback passes over http or https unless switched off', async () => {
  const pub = await vetWebhookUrl('https://public.hooks.test/hook?token=x', { lookup });
  assert.deepEqual(pub.addresses, ['93.184.216.34']);
  assert.equal(pub.host, 'public.hooks.test');
  assert.equal(pub.loopback, false);
  assert.deepEqual((await vetWebhookUrl('https://v6.hooks.test/', { lookup })).addresses, ['2606:2800:220:1:248:1893:25c8:1946']);
  for (const url of ['http://127.0.0.1:9/x', 'https://[::1]:9/', 'http://localhost:9/', 'http://local.hooks.test:9/']) {
    assert.equal((await vetWebhookUrl(url, { lookup })).loopback, true, url);
    await assert.rejects(vetWebhookUrl(url, { lookup, allowLoopback: false }), /loopback receivers are switched off/, url);
  }
});
