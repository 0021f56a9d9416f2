/**
 * Soak: `npx tsx bench/soak/index.ts [minutes] [rate]`, or `npm run bench -- --only soak`.
 *
 * The STS as a child process on a fresh database (bench/exchange's start-up: `DATABASE_URL`, else a
 * throwaway cluster; the database is created for the run and dropped at the end), loaded with RFC 8693
 * token exchanges at a steady `rate` per second (autocannon's `overallRate`, `BENCH_SOAK_CONNECTIONS`
 * connections, each under an approval of its own) for `minutes`. Every second it reads the STS's
 * `/metrics` (`countersign_nodejs_heap_size_used_bytes`) and `/proc/<pid>/status` (`VmRSS`); every 30 s
 * it records RSS and the smallest heap-used seen in those 30 s (a proxy for the live heap: the heap
 * right after a collection, without forcing one), the exchanges answered 200 and the load average.
 * What grows without bound shows as a rising heap floor; RSS also holds what V8 and glibc keep.
 *
 * Environment: `BENCH_SOAK_MINUTES` (default 10), `BENCH_SOAK_RATE` (default 200),
 * `BENCH_SOAK_CONNECTIONS` (default 8), `BENCH_SOAK_HEAPSNAPSHOT=1` (start the STS with
 * `--heapsnapshot-signal=SIGUSR2` and take a snapshot after the first and the last interval, into
 * `<tmpdir>/countersign-soak-heap`, for a comparison in Chrome DevTools), `DATABASE_URL`.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type BenchSts, loadSts, machineLine, startBenchSts } from "../exchange/index.js";

/** Options of {@link runSoak}. */
export interface SoakOptions {
  /** Default 10. */
  readonly minutes?: number;
  /** Exchanges per second offered. Default 200. */
  readonly rate?: number;
  /** Default 8. */
  readonly connections?: number;
  /** Seconds between two recorded points. Default 30. */
  readonly intervalSeconds?: number;
  /** Take heap snapshots (SIGUSR2) after the first and the last interval. Default false. */
  readonly heapSnapshots?: boolean;
  readonly log?: (line: string) => void;
}

/** One recorded point of the curve. */
export interface SoakPoint {
  /** Minutes since the load started. */
  readonly minute: number;
  readonly rssMiB: number;
  /** The smallest heap-used sampled during the interval, MiB. */
  readonly heapFloorMiB: number;
  /** V8's external memory (Buffers, ArrayBuffers) at the end of the interval, MiB. */
  readonly externalMiB: number;
  /** Exchanges answered 200 per second during the interval. */
  readonly exchangesPerSecond: number;
  /** The machine's 1-minute load average at the end of the interval. */
  readonly load1: number;
}

export interface SoakResult {
  readonly points: readonly SoakPoint[];
  readonly database: string;
  /** Non-2xx answers and connection errors over the whole run. */
  readonly non2xx: number;
  readonly errors: number;
  readonly markdown: string;
}

const MiB = 1024 * 1024;
/** Where heap snapshots go (`--diagnostic-dir`). */
const SNAPSHOT_DIR = path.join(tmpdir(), "countersign-soak-heap");

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** One value of `/metrics` (a sample without labels, or the sum over the labels matching `labels`). */
function metric(text: string, name: string, labels = ""): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith(" ") || (rest.startsWith("{") && rest.includes(labels)))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

interface Sample {
  readonly heapUsed: number;
  readonly external: number;
  readonly exchanges: number;
}

/** Reads `/metrics` (retrying a few times: a heap snapshot stalls the STS for a while). */
async function scrape(sts: BenchSts): Promise<Sample> {
  for (let attempt = 1; ; attempt++) {
    try {
      const text = await (await fetch(`${sts.base}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
      return {
        heapUsed: metric(text, "countersign_nodejs_heap_size_used_bytes"),
        external: metric(text, "countersign_nodejs_external_memory_bytes"),
        exchanges: metric(
          text,
          "countersign_token_requests_total",
          'grant_type="token_exchange",error="none"',
        ),
      };
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

const fmt = (value: number, digits = 0) =>
  value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdownOf(points: readonly SoakPoint[]): string {
  return [
    "| minute | RSS MiB | heap used MiB (floor of the interval) | external MiB | exchanges/s | load average (1 min) |",
    "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ...points.map(
      (p) =>
        `| ${fmt(p.minute, 1)} | ${fmt(p.rssMiB, 0)} | ${fmt(p.heapFloorMiB, 1)} | ${fmt(p.externalMiB, 1)} | ${fmt(p.exchangesPerSecond, 0)} | ${fmt(p.load1, 2)} |`,
    ),
  ].join("\n");
}

/** Runs the soak once (see the file comment). Stops everything it started, whatever happens. */
export async function runSoak(options: SoakOptions = {}): Promise<SoakResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const minutes = options.minutes ?? 10;
  const rate = options.rate ?? 200;
  const connections = options.connections ?? 8;
  const intervalMs = (options.intervalSeconds ?? 30) * 1000;
  if (options.heapSnapshots) mkdirSync(SNAPSHOT_DIR, { recursive: true });
  const sts = await startBenchSts({
    connections,
    log,
    ...(options.heapSnapshots
      ? { nodeArgs: ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${SNAPSHOT_DIR}`] }
      : {}),
  });
  try {
    const points: SoakPoint[] = [];
    const first = await scrape(sts);
    points.push({
      minute: 0,
      rssMiB: rssMiB(sts.pid),
      heapFloorMiB: first.heapUsed / MiB,
      externalMiB: first.external / MiB,
      exchangesPerSecond: 0,
      load1: loadavg()[0] ?? 0,
    });
    log(`soak: ${minutes} min at ${rate} exchanges/s over ${connections} connections`);
    const started = Date.now();
    const load = loadSts(sts, "spread", { connections, duration: minutes * 60, overallRate: rate });
    let done = false;
    void load.finally(() => {
      done = true;
    });
    let floor = Number.POSITIVE_INFINITY;
    let intervalStart = started;
    let exchangesAtStart = first.exchanges;
    while (!done) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const sample = await scrape(sts);
      floor = Math.min(floor, sample.heapUsed);
      const now = Date.now();
      if (now - intervalStart >= intervalMs || done) {
        const point = {
          minute: (now - started) / 60_000,
          rssMiB: rssMiB(sts.pid),
          heapFloorMiB: floor / MiB,
          externalMiB: sample.external / MiB,
          exchangesPerSecond: ((sample.exchanges - exchangesAtStart) * 1000) / (now - intervalStart),
          load1: loadavg()[0] ?? 0,
        };
        points.push(point);
        log(
          `  ${fmt(point.minute, 1)} min: RSS ${fmt(point.rssMiB)} MiB, heap floor ${fmt(point.heapFloorMiB, 1)} MiB, external ${fmt(point.externalMiB, 1)} MiB, ${fmt(point.exchangesPerSecond)} exchanges/s, load ${fmt(point.load1, 2)}`,
        );
        if (options.heapSnapshots && (points.length === 2 || done)) process.kill(sts.pid, "SIGUSR2");
        floor = Number.POSITIVE_INFINITY;
        intervalStart = now;
        exchangesAtStart = sample.exchanges;
      }
    }
    const result = await load;
    return {
      points,
      database: sts.database,
      non2xx: result.non2xx,
      errors: result.errors + result.timeouts,
      markdown: markdownOf(points),
    };
  } finally {
    await sts.stop();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const result = await runSoak({
    minutes: Number(process.argv[2] ?? env.BENCH_SOAK_MINUTES ?? 10),
    rate: Number(process.argv[3] ?? env.BENCH_SOAK_RATE ?? 200),
    connections: Number(env.BENCH_SOAK_CONNECTIONS ?? 8),
    heapSnapshots: env.BENCH_SOAK_HEAPSNAPSHOT === "1",
  });
  process.stdout.write(
    `${machineLine()}; Postgres: ${result.database}; non-2xx ${result.non2xx}, errors ${result.errors}\n\n${result.markdown}\n`,
  );
}
