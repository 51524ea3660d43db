// `npm run bench`: end-to-end measurements of a real `lacre serve` child on its DEFAULTS.
// The bench sets only what any deployment must set to point at its world (data dir, routes to the
// sink, TLS policy, CA file, host name, DNS server, submission certificate; ports are picked free);
// no tuning variable. See bench/README.md for what each scenario measures.
//
//   npm run bench [-- --messages N] [--only http,smtp,intake,memory,flat] [--queued N]
//                 [--flat 1000,10000] [--full] [--time-limit SECONDS] [--vs-postfix [--rounds R]]
//
// Prints a table per scenario and, last, one JSON line with every number.
import { scrubLacreEnv, createWorld, TLS_POLICY, type World } from './lib/world.ts';
import { clientPhase, drainPhase, killServers, memoryPhase, type MemoryResult, type PhaseResult } from './lib/phases.ts';
import { TEXT_BYTES } from './lib/clients.ts';
import { now, round } from './lib/util.ts';
import { runVsPostfix } from './lib/vs-postfix.ts';
import { printPhases } from './lib/report.ts';

const SCENARIOS = ['http', 'smtp', 'intake', 'memory', 'flat'] as const;
type Scenario = (typeof SCENARIOS)[number];

interface Args {
  messages: number;
  only: Set<Scenario>;
  queued: number;
  flat: number[];
  timeLimitMs: number;
  vsPostfix: boolean;
  vsPostfixInner: boolean;
  rounds: number;
  stateDir?: string;
  hostNetns?: string;
}

function usage(problem: string): never {
  console.error(`bench: ${problem}
usage: npm run bench -- [--messages N] [--only ${SCENARIOS.join('|')}[,...]] [--queued N] [--flat N,N,...] [--full]
                        [--time-limit SECONDS] [--vs-postfix [--rounds R]]`);
  process.exit(2);
}

function intArg(name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) usage(`${name} needs an integer from ${min} to ${max}, got ${value}`);
  return n;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    messages: 2000,
    only: new Set(SCENARIOS),
    queued: 100_000,
    flat: [1_000, 10_000],
    timeLimitMs: 180_000,
    vsPostfix: false,
    vsPostfixInner: false,
    rounds: 3,
  };
  let full = false;
  let flatGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--messages' || a === '-n') args.messages = intArg(a, value(), 1, 1_000_000);
    else if (/^\d+$/.test(a)) args.messages = intArg('message count', a, 1, 1_000_000);
    else if (a === '--only') {
      const names = value().split(',').map((s) => s.trim()).filter(Boolean);
      for (const n of names) if (!(SCENARIOS as readonly string[]).includes(n)) usage(`unknown scenario "${n}"`);
      args.only = new Set(names as Scenario[]);
    } else if (a === '--queued') args.queued = intArg(a, value(), 1, 1_000_000);
    else if (a === '--flat') {
      args.flat = value().split(',').map((s) => intArg('--flat', s.trim(), 1, 1_000_000));
      flatGiven = true;
    } else if (a === '--full') full = true;
    else if (a === '--time-limit') args.timeLimitMs = intArg(a, value(), 5, 3_600) * 1000;
    else if (a === '--vs-postfix') args.vsPostfix = true;
    else if (a === '--vs-postfix-inner') args.vsPostfixInner = true;
    else if (a === '--rounds') args.rounds = intArg(a, value(), 1, 20);
    else if (a === '--state-dir') args.stateDir = value();
    else if (a === '--host-netns') args.hostNetns = value();
    else if (a === '--help' || a === '-h') usage('help');
    else usage(`unknown argument "${a}"`);
  }
  if (full && !flatGiven) args.flat = [1_000, 10_000, 50_000];
  return args;
}

const args = parseArgs(process.argv.slice(2));
const scrubbed = scrubLacreEnv();
const log = (line: string) => console.log(line);
let currentWorld: World | null = null;

if (!args.vsPostfix && !args.vsPostfixInner) {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    console.error(`bench: ${signal}, stopping the servers it started`);
    void killServers()
      .then(() => currentWorld?.close())
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

if (args.vsPostfix || args.vsPostfixInner) {
  process.exitCode = await runVsPostfix({ messages: args.messages, rounds: args.rounds, timeLimitMs: args.timeLimitMs, inner: args.vsPostfixInner, stateDir: args.stateDir, hostNetns: args.hostNetns, log });
} else {
  process.exitCode = await runLacreBench();
}

async function runLacreBench(): Promise<number> {
  const startedAt = now();
  log(`Lacre bench: server on its defaults (no tuning variable set${scrubbed.length ? `; removed from the environment: ${scrubbed.join(', ')}` : ''}), log level info (the default)`);
  log(`  ${args.messages} messages of ~${TEXT_BYTES} B text per scenario, one recipient each, TLS policy ${TLS_POLICY} to the sink (test CA), time limit ${args.timeLimitMs / 1000} s per phase`);
  const world: World = await createWorld();
  currentWorld = world;
  const results: Record<string, unknown> = {};
  const table: PhaseResult[] = [];
  const tl = args.timeLimitMs;
  const phase = async (name: string, p: Promise<PhaseResult>) => {
    log(`running ${name} ...`);
    const r = await p;
    table.push(r);
    results[name] = r;
    log(`  ${name}: ${r.delivered ? `${r.delivered} delivered, ${r.deliveredPerSec} msg/s` : `${r.accepted} accepted, ${r.acceptPerSec} msg/s`}${r.timedOut ? ' (TIMED OUT)' : ''}`);
    return r;
  };
  /** Half the measured rate, for about 15 s (at least 20 messages, at most the run's count). */
  const halfRate = (r: PhaseResult) => {
    if (!r.deliveredPerSec) return null;
    const pace = r.deliveredPerSec / 2;
    const count = Math.max(20, Math.min(args.messages, Math.round(pace * 15)));
    return { pace, count, limit: Math.min(tl, Math.round((count / pace) * 1000) + 30_000) };
  };
  try {
    for (const via of ['http', 'smtp'] as const) {
      if (!args.only.has(via)) continue;
      const what = via === 'http' ? 'HTTP /v3.1/send, 50 per request, 4 in flight' : 'SMTP submission, 20 sessions, STARTTLS + AUTH PLAIN';
      const r = await phase(`${via}`, clientPhase(world, { label: `${via}: ${what}`, via, count: args.messages, destination: 'sink', timeLimitMs: tl }));
      const half = halfRate(r);
      if (half) {
        await phase(
          `${via}Latency`,
          clientPhase(world, { label: `${via}: latency at half rate (${round(half.pace, 1)} msg/s)`, via, count: half.count, destination: 'sink', timeLimitMs: half.limit, rate: half.pace }),
        );
      }
    }
    if (args.only.has('intake')) {
      await phase(
        'intake',
        clientPhase(world, { label: 'intake alone: HTTP to a deferring destination (closed port)', via: 'http', count: args.messages, destination: 'defer', timeLimitMs: tl }),
      );
    }
    let memory: MemoryResult | null = null;
    if (args.only.has('memory')) {
      log(`running memory (${args.queued} queued) ...`);
      memory = await memoryPhase(world, args.queued, 20_000, Math.max(tl, 600_000), log);
      results.memory = memory;
    }
    const flat: PhaseResult[] = [];
    if (args.only.has('flat')) {
      for (const n of args.flat) {
        log(`running flat ${n} ...`);
        const r = await drainPhase(world, `flatness: ${n} queued first (unsigned), then delivered`, n, Math.max(tl, 300_000), log);
        flat.push(r);
        log(`  flat ${n}: ${r.delivered} delivered, ${r.deliveredPerSec} msg/s${r.timedOut ? ' (TIMED OUT)' : ''}`);
      }
      const base = flat[0]?.deliveredPerSec;
      results.flat = {
        runs: flat,
        ratios: flat.map((r) => ({ messages: r.messages, vsFirst: base && r.deliveredPerSec ? round(r.deliveredPerSec / base, 2) : null })),
      };
    }

    log('');
    printPhases(log, [...table, ...flat]);
    if (memory) {
      log('');
      log(
        `queue memory: ${memory.queued} messages queued (committed in ${memory.fillSeconds} s), server worked ${memory.workSeconds} s: ` +
          `RSS at ready ${memory.rssAtReadyMiB} MiB, now ${memory.rssAtEndMiB} MiB, peak (VmHWM) ${memory.peakRssMiB} MiB — target < ${memory.targetMiB} MiB: ` +
          `${memory.peakRssMiB !== null && memory.peakRssMiB < memory.targetMiB ? 'met' : 'NOT met'}${memory.timedOut ? ' (queue fill cut short by the time limit)' : ''}`,
      );
    }
    if (flat.length > 1) {
      const base = flat[0].deliveredPerSec;
      log(`flatness: ${flat.map((r) => `${r.messages}: ${r.deliveredPerSec} msg/s${base && r.deliveredPerSec ? ` (${round(r.deliveredPerSec / base, 2)}x)` : ''}`).join(', ')}`);
    }
    for (const name of ['httpLatency', 'smtpLatency']) {
      const r = results[name] as PhaseResult | undefined;
      if (r) log(`${name}: p99 ${r.p99Ms} ms at ${r.pace} msg/s — target < 250 ms: ${r.p99Ms !== null && r.p99Ms < 250 ? 'met' : 'NOT met'}`);
    }
    log(`total ${round((now() - startedAt) / 1000, 1)} s`);
    console.log(
      JSON.stringify({
        bench: 'lacre',
        defaults: true,
        tlsPolicy: TLS_POLICY,
        logLevel: 'info',
        messages: args.messages,
        textBytes: TEXT_BYTES,
        ...results,
      }),
    );
    // Timeouts are results (the table says so); refused messages or nothing measured are failures.
    const problems = table.some((r) => r.failed > 0 || (r.delivered === 0 && r.accepted === 0)) || flat.some((r) => r.delivered === 0);
    return problems ? 1 : 0;
  } finally {
    await world.close();
  }
}
