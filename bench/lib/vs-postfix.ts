// `npm run bench -- --vs-postfix`: Lacre side by side with Debian's Postfix, relaying the same
// messages from the same 20-session SMTP client (nodemailer, STARTTLS) to the same kind of TLS
// sink, in interleaved rounds: Lacre, Postfix with its defaults (smtp_tls_security_level=encrypt,
// one TLS handshake per message), Postfix with smtp_tls_connection_reuse=yes; each round prints
// Lacre / Postfix-reuse, and the summary their median.
//
// Isolation. Postfix only ever runs inside a private network namespace: the outer process (the
// host's namespace) installs the package if missing (with service starts denied through
// policy-rc.d) and then runs this same bench as a child under `unshare -n`; that child refuses to
// go on unless its network namespace differs from PID 1's, brings up `lo`, and runs everything —
// harness DNS, sinks, Lacre, Postfix, clients — in there. Each Postfix is a private instance
// (`postfix -c <dir> start-fg`) whose config, queue and data directories live under a throwaway
// state directory; /etc/postfix is never read for configuration nor written. On exit (normal,
// error or signal) the instance is stopped, leftover daemons are killed by pid, and the state
// directory removed; the outer process checks again once the child is gone.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IssuedCert } from '../../test/harness/ca.ts';
import { benchMessages, sendSmtp } from './clients.ts';
import { clientPhase, killServers, summarize, type PhaseResult } from './phases.ts';
import { printTable } from './report.ts';
import { forkSink } from './sink.ts';
import { childrenCpuMs, cpuMs, median, now, round, sleep } from './util.ts';
import { SINK_DOMAIN, SINK_HOST, TLS_POLICY, createWorld, type World } from './world.ts';

export interface VsPostfixOptions {
  messages: number;
  rounds: number;
  timeLimitMs: number;
  inner: boolean;
  stateDir?: string;
  /** The outer process's network namespace (readlink /proc/self/ns/net), for the inner one to compare. */
  hostNetns?: string;
  log: (s: string) => void;
}

const POSTFIX_HOSTNAME = 'postfix.bench.test';
/** Stops of the Postfix instances running now, for the signal handler. */
const liveInstances = new Set<() => Promise<void>>();
const RUN_TS = fileURLToPath(new URL('../run.ts', import.meta.url));

export async function runVsPostfix(o: VsPostfixOptions): Promise<number> {
  return o.inner ? inner(o) : outer(o);
}

// ---- outside the namespace ----------------------------------------------------------------

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 600_000): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

function ensurePostfix(log: (s: string) => void): void {
  if (existsSync('/usr/sbin/postfix')) return;
  if (process.getuid?.() !== 0) throw new Error('postfix is not installed and installing it needs root');
  log('installing Debian\'s postfix (service start denied by policy-rc.d, debconf "No configuration") ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const candidate = run('apt-cache', ['policy', 'postfix']).out;
  if (!/Candidate: (?!\(none\))/.test(candidate)) {
    const u = run('apt-get', ['update'], env);
    if (u.status !== 0) throw new Error(`apt-get update failed:\n${u.out.slice(-2000)}`);
  }
  const selections = spawnSync('debconf-set-selections', { input: 'postfix postfix/main_mailer_type select No configuration\n', encoding: 'utf8' });
  if (selections.status !== 0) log(`  debconf-set-selections failed (continuing): ${selections.stderr}`);
  // Never let the package start the system's Postfix outside a namespace.
  const policy = '/usr/sbin/policy-rc.d';
  const ours = !existsSync(policy);
  if (ours) writeFileSync(policy, '#!/bin/sh\n# temporary, from lacre bench/lib/vs-postfix.ts\nexit 101\n', { mode: 0o755 });
  try {
    const r = run('apt-get', ['install', '-y', 'postfix'], env);
    if (r.status !== 0) throw new Error(`apt-get install postfix failed:\n${r.out.slice(-2000)}`);
  } finally {
    if (ours) unlinkSync(policy);
  }
}

/** Kills Postfix masters left under the state dir (by the pid each wrote), then removes it. */
function sweepState(stateDir: string, log: (s: string) => void): void {
  if (!existsSync(stateDir)) return;
  for (const name of readdirSync(stateDir)) {
    const pidFile = join(stateDir, name, 'queue', 'pid', 'master.pid');
    if (!existsSync(pidFile)) continue;
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'master') continue;
      const cfg = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (!cfg.includes(stateDir)) continue; // a reused pid, not our master
      log(`  killing leftover postfix master ${pid}`);
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  rmSync(stateDir, { recursive: true, force: true });
}

async function outer(o: VsPostfixOptions): Promise<number> {
  ensurePostfix(o.log);
  const stateDir = mkdtempSync(join(tmpdir(), 'lacre-bench-postfix-'));
  const args = [
    '-n',
    '--',
    process.execPath,
    RUN_TS,
    '--vs-postfix-inner',
    '--messages', String(o.messages),
    '--rounds', String(o.rounds),
    '--time-limit', String(Math.round(o.timeLimitMs / 1000)),
    '--state-dir', stateDir,
    '--host-netns', readlinkSync('/proc/self/ns/net'),
  ];
  o.log(`vs-postfix: running the comparison under unshare -n (private network namespace, loopback only); state in ${stateDir}`);
  const child = spawn('unshare', args, { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals) => () => child.kill(signal);
  const onInt = forward('SIGINT');
  const onTerm = forward('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  try {
    const [code] = (await once(child, 'exit')) as [number | null];
    return code ?? 1;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    sweepState(stateDir, o.log);
  }
}

// ---- inside the namespace ------------------------------------------------------------------

/** Network interfaces of this process's network namespace. */
function interfaces(): string[] {
  return readFileSync('/proc/self/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0].trim())
    .filter(Boolean);
}

/** A namespace other than the outer process's (passed as --host-netns), with nothing but lo in it. */
function privateNamespace(hostNetns: string | undefined): boolean {
  try {
    const mine = readlinkSync('/proc/self/ns/net');
    const ifs = interfaces();
    return !!hostNetns && mine !== hostNetns && ifs.length === 1 && ifs[0] === 'lo';
  } catch {
    return false;
  }
}

function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no user ${name} (is postfix installed?)`);
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

// Debian's master.cf services that relaying needs, chroot off (a private instance has no chroot
// jail), plus tlsproxy, which smtp_tls_connection_reuse needs and Debian's file leaves out.
const MASTER_CF = `
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsproxy  unix  -       -       n       -       0       tlsproxy
postlog   unix-dgram n  -       n       -       1       postlogd
`.trimStart();

interface PostfixInstance {
  dir: string;
  conf: string;
  child: ChildProcess;
  masterPid: number;
  stop(): Promise<void>;
}

function mainCf(dir: string, sinkPort: number, reuse: boolean): string {
  const lines = [
    '# A private benchmark instance: everything not set here is a Postfix default.',
    'compatibility_level = 3.6',
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `maillog_file = ${dir}/maillog`,
    `maillog_file_prefixes = ${dir}`,
    `myhostname = ${POSTFIX_HOSTNAME}`,
    'mydestination =',
    'alias_maps =',
    'alias_database =',
    'local_transport = error:local delivery is disabled',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'smtpd_relay_restrictions = permit_mynetworks, reject',
    `relayhost = [127.0.0.1]:${sinkPort}`,
    'smtp_tls_security_level = encrypt',
    `smtp_tls_CAfile = ${dir}/conf/ca.pem`,
    // Inbound STARTTLS too, so the client does exactly what it does with Lacre (minus AUTH).
    'smtpd_tls_security_level = may',
    `smtpd_tls_cert_file = ${dir}/conf/smtpd-cert.pem`,
    `smtpd_tls_key_file = ${dir}/conf/smtpd-key.pem`,
  ];
  if (reuse) lines.push('smtp_tls_connection_reuse = yes');
  return lines.join('\n') + '\n';
}

/** Own pids of the master and every process whose parent is the master. */
function postfixTree(masterPid: number): number[] {
  const pids = [masterPid];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[1]);
      if (ppid === masterPid) pids.push(Number(name));
    } catch {
      // gone
    }
  }
  return pids;
}

/** CPU ms of the master, its live children, and its children that exited (reaped by the master). */
function postfixCpuMs(masterPid: number): number {
  let total = childrenCpuMs(masterPid) ?? 0;
  for (const pid of postfixTree(masterPid)) total += cpuMs(pid) ?? 0;
  return total;
}

/** Proportional set size (Pss, shared pages split among their users) summed over the live daemons. */
function postfixPssMiB(masterPid: number): number {
  let kb = 0;
  for (const pid of postfixTree(masterPid)) {
    try {
      kb += Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return Math.round(kb / 1024);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once something answers 220 on 127.0.0.1:25, or throws at the deadline. */
async function waitForBanner(deadline: number, child: ChildProcess): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(25, '127.0.0.1');
      socket.setTimeout(2_000, () => socket.destroy());
      socket.once('data', (d) => {
        resolve(d.toString().startsWith('220'));
        socket.end('QUIT\r\n');
      });
      socket.once('error', () => resolve(false));
      socket.once('close', () => resolve(false));
    });
    if (ok) return;
    if (child.exitCode !== null || now() > deadline) throw new Error('postfix did not answer on 127.0.0.1:25');
    await sleep(100);
  }
}

async function startPostfix(stateDir: string, world: World, smtpdCert: IssuedCert, sinkPort: number, reuse: boolean): Promise<PostfixInstance> {
  const dir = mkdtempSync(join(stateDir, reuse ? 'reuse-' : 'default-'));
  // Postfix's unprivileged daemons must be able to reach data/ and the queue.
  chmodSync(stateDir, 0o755);
  chmodSync(dir, 0o755);
  const conf = join(dir, 'conf');
  const postfixUser = userIds('postfix');
  mkdirSync(conf, { mode: 0o755 });
  mkdirSync(join(dir, 'queue'), { mode: 0o755 });
  mkdirSync(join(dir, 'data'), { mode: 0o700 });
  chownSync(join(dir, 'data'), postfixUser.uid, postfixUser.gid);
  copyFileSync(world.caFile, join(conf, 'ca.pem'));
  writeFileSync(join(conf, 'smtpd-cert.pem'), smtpdCert.chainPem, { mode: 0o644 });
  writeFileSync(join(conf, 'smtpd-key.pem'), smtpdCert.keyPem, { mode: 0o600 });
  writeFileSync(join(conf, 'main.cf'), mainCf(dir, sinkPort, reuse));
  writeFileSync(join(conf, 'master.cf'), MASTER_CF);
  // Creates the queue's subdirectories with Postfix's own ownership and modes.
  const check = run('postfix', ['-c', conf, 'check'], process.env, 60_000);
  if (check.status !== 0) throw new Error(`postfix -c ${conf} check failed:\n${check.out}`);
  const child = spawn('postfix', ['-c', conf, 'start-fg'], { stdio: 'ignore' });
  const stop = async () => {
    liveInstances.delete(stop);
    const tree = existsSync(join(dir, 'queue', 'pid', 'master.pid')) ? postfixTree(Number(readFileSync(join(dir, 'queue', 'pid', 'master.pid'), 'utf8').trim())) : [];
    if (child.exitCode === null) {
      run('postfix', ['-c', conf, 'stop'], process.env, 30_000);
      const deadline = now() + 10_000;
      while (child.exitCode === null && now() < deadline) await sleep(50);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    // Daemons notice the master is gone within a moment; whatever is left is killed by pid.
    const deadline = now() + 5_000;
    while (tree.some(alive) && now() < deadline) await sleep(50);
    for (const pid of tree.filter(alive)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  liveInstances.add(stop);
  try {
    await waitForBanner(now() + 30_000, child);
    const masterPid = Number(readFileSync(join(dir, 'queue', 'pid', 'master.pid'), 'utf8').trim());
    return { dir, conf, child, masterPid, stop };
  } catch (err) {
    const maillog = existsSync(join(dir, 'maillog')) ? readFileSync(join(dir, 'maillog'), 'utf8').slice(-2000) : '';
    await stop();
    throw new Error(`${(err as Error).message}\n${maillog}`);
  }
}

async function postfixPhase(world: World, stateDir: string, smtpdCert: IssuedCert, label: string, count: number, reuse: boolean, timeLimitMs: number): Promise<PhaseResult> {
  const deadline = now() + timeLimitMs;
  const messages = benchMessages(`pf${reuse ? 'r' : 'd'}${Math.round(now()).toString(36)}`, count, SINK_DOMAIN);
  const sink = await forkSink({ cert: world.sinkCert, hostname: SINK_HOST });
  let instance: PostfixInstance | null = null;
  try {
    instance = await startPostfix(stateDir, world, smtpdCert, sink.port, reuse);
    const cpuBefore = postfixCpuMs(instance.masterPid);
    const clientRun = await sendSmtp({ host: '127.0.0.1', port: 25, ca: world.ca.certPem, servername: POSTFIX_HOSTNAME }, messages, { deadline, sessions: 20 });
    const complete = (await sink.waitFor(clientRun.acceptedAt.keys(), deadline)) && clientRun.acceptedAt.size === messages.length;
    const cpuAfter = postfixCpuMs(instance.masterPid);
    const rss = postfixPssMiB(instance.masterPid);
    const s = await sink.stats();
    const delivered = sink.deliveredAt.size;
    return summarize(label, messages, clientRun, sink.deliveredAt, {
      sinkSessions: s.sessions,
      tlsHandshakes: s.tlsHandshakes,
      tlsProtocols: s.tlsProtocols,
      messageBytes: s.firstMessageBytes,
      timedOut: !complete,
      cpuMsPerMessage: delivered ? round((cpuAfter - cpuBefore) / delivered, 2) : null,
      peakRssMiB: rss,
    });
  } finally {
    await instance?.stop();
    await sink.close();
  }
}

async function inner(o: VsPostfixOptions): Promise<number> {
  if (!privateNamespace(o.hostNetns)) {
    console.error('vs-postfix: refusing to start Postfix outside a private network namespace (run `npm run bench -- --vs-postfix`)');
    return 2;
  }
  if (!o.stateDir) throw new Error('--vs-postfix-inner needs --state-dir');
  execFileSync('ip', ['link', 'set', 'lo', 'up']);
  const stateDir = o.stateDir;
  const log = o.log;
  let world: World | null = null;
  let cleaning: Promise<void> | null = null;
  const cleanup = () => (cleaning ??= (async () => {
    for (const stop of [...liveInstances]) await stop().catch(() => {});
    await killServers();
    await world?.close();
  })());
  const onSignal = (signal: NodeJS.Signals) => {
    log(`vs-postfix: ${signal}, cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  // `on`, not `once`: a Ctrl-C reaches this process twice (from the terminal and forwarded by the outer one).
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    world = await createWorld();
    const smtpdCert = await world.ca.issue({ names: [POSTFIX_HOSTNAME] });
    const version = run('postconf', ['-d', '-h', 'mail_version']).out.trim();
    log(`vs-postfix: ${o.messages} messages per run, 20 SMTP sessions (nodemailer, STARTTLS; AUTH PLAIN for Lacre only), ${o.rounds} interleaved rounds`);
    log(`  Lacre: defaults, TLS policy ${TLS_POLICY}, DKIM-signs each message (Ed25519 + RSA); Postfix ${version}: defaults, smtp_tls_security_level=encrypt, no signing`);
    const rounds: Array<{ lacre: PhaseResult; postfixDefault: PhaseResult; postfixReuse: PhaseResult; ratio: number | null }> = [];
    for (let r = 1; r <= o.rounds; r++) {
      log(`round ${r}/${o.rounds} ...`);
      const lacre = await clientPhase(world, { label: `round ${r}: Lacre`, via: 'smtp', count: o.messages, destination: 'sink', timeLimitMs: o.timeLimitMs });
      log(`  Lacre            ${lacre.deliveredPerSec} msg/s${lacre.timedOut ? ' (TIMED OUT)' : ''}`);
      const pfd = await postfixPhase(world, stateDir, smtpdCert, `round ${r}: Postfix default`, o.messages, false, o.timeLimitMs);
      log(`  Postfix default  ${pfd.deliveredPerSec} msg/s${pfd.timedOut ? ' (TIMED OUT)' : ''}`);
      const pfr = await postfixPhase(world, stateDir, smtpdCert, `round ${r}: Postfix reuse`, o.messages, true, o.timeLimitMs);
      log(`  Postfix reuse    ${pfr.deliveredPerSec} msg/s${pfr.timedOut ? ' (TIMED OUT)' : ''}`);
      const ratio = lacre.deliveredPerSec && pfr.deliveredPerSec ? round(lacre.deliveredPerSec / pfr.deliveredPerSec, 2) : null;
      log(`  Lacre / Postfix-reuse = ${ratio ?? '-'}`);
      rounds.push({ lacre, postfixDefault: pfd, postfixReuse: pfr, ratio });
    }
    log('');
    const all = rounds.flatMap((x) => [x.lacre, x.postfixDefault, x.postfixReuse]);
    printTable(
      log,
      ['run', 'msgs', 'delivered', 'accept/s', 'deliv/s', 'p50 ms', 'p99 ms', 'TLS hs', 'CPU ms/msg', 'mem MiB', 'bytes'],
      all.map((p) => [
        p.label + (p.timedOut ? ' [TIMED OUT]' : '') + (p.failed ? ` [${p.failed} FAILED]` : ''),
        String(p.messages),
        String(p.delivered),
        String(p.acceptPerSec ?? '-'),
        String(p.deliveredPerSec ?? '-'),
        String(p.p50Ms ?? '-'),
        String(p.p99Ms ?? '-'),
        String(p.tlsHandshakes ?? '-'),
        String(p.cpuMsPerMessage ?? '-'),
        String(p.peakRssMiB ?? '-'),
        String(p.messageBytes ?? '-'),
      ]),
    );
    for (const p of all) for (const e of p.errors) log(`  ${p.label}: ${e}`);
    const med = (pick: (x: (typeof rounds)[number]) => number | null) => round(median(rounds.map(pick).filter((v): v is number => v !== null)), 2);
    const summary = {
      lacre: { deliveredPerSec: med((x) => x.lacre.deliveredPerSec), p99Ms: med((x) => x.lacre.p99Ms), cpuMsPerMessage: med((x) => x.lacre.cpuMsPerMessage) },
      postfixDefault: { deliveredPerSec: med((x) => x.postfixDefault.deliveredPerSec), p99Ms: med((x) => x.postfixDefault.p99Ms), cpuMsPerMessage: med((x) => x.postfixDefault.cpuMsPerMessage) },
      postfixReuse: { deliveredPerSec: med((x) => x.postfixReuse.deliveredPerSec), p99Ms: med((x) => x.postfixReuse.p99Ms), cpuMsPerMessage: med((x) => x.postfixReuse.cpuMsPerMessage) },
      ratios: rounds.map((x) => x.ratio),
      medianRatio: med((x) => x.ratio),
    };
    log(`memory column: Lacre peak RSS (VmHWM); Postfix the sum of its live daemons' Pss at the end. Postfix CPU: master and daemons, live and reaped.`);
    log(
      `median msg/s: Lacre ${summary.lacre.deliveredPerSec}, Postfix default ${summary.postfixDefault.deliveredPerSec}, Postfix reuse ${summary.postfixReuse.deliveredPerSec}; ` +
        `Lacre / Postfix-reuse per round ${summary.ratios.join(', ')}, median ${summary.medianRatio}`,
    );
    console.log(JSON.stringify({ bench: 'vs-postfix', messages: o.messages, rounds, summary, postfixVersion: version, lacreTlsPolicy: TLS_POLICY }));
    return rounds.some((x) => x.lacre.delivered === 0 || x.postfixReuse.delivered === 0) ? 1 : 0;
  } catch (err) {
    console.error(`vs-postfix: ${(err as Error).stack ?? err}`);
    return 1;
  } finally {
    await cleanup();
  }
}
