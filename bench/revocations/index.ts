/**
 * Revocation stream benchmark: does a crowd of resuming stream subscribers slow the token endpoint?
 *
 *   npx tsx bench/revocations/index.ts      # PGlite, then Postgres (DATABASE_URL, else a throwaway cluster)
 *
 * For each engine, in one run: a fresh database is migrated (`countersign migrate`) and seeded with a
 * feed of `BENCH_ENTRIES` (default 8,000) revocations whose tokens are still alive (nothing is
 * compacted during the run) and one approval with an unreachable budget; the STS runs as a child
 * process (`node bin/countersign.js serve`, default revocation settings: `max_replay_entries` 1000,
 * `max_streams_per_address` 8, `max_replays_per_address_per_minute` 60); then `BENCH_ROUNDS` (default 3)
 * rounds of two phases, each measuring for `BENCH_PHASE_SECONDS` (default 10) `POST /token` with
 * `client_credentials` (the agent's approval API credential) and the RFC 8693 token exchange under that
 * approval (which always writes to the database) in turn, one request at a time on one keep-alive
 * connection, every latency recorded:
 *
 * 1. **idle** (the first after a warm-up of 100 requests of each);
 * 2. **streams replaying**: a separate process (`bench/revocations/streams.ts`) opens `BENCH_STREAMS`
 *    (default 300) streams from 127.0.0.2, 127.0.0.3, … (8 per address), each resuming
 *    `max_replay_entries` behind the head (`Last-Event-ID`), so each is replayed the most the STS
 *    replays; a stream that has received its replay reconnects at once, so replays never stop (as fast
 *    as the STS lets them: the load process honours `Retry-After` on a 429, as a gateway does). Measured
 *    from the moment every stream has been answered (or 30 s), the first burst of replays included;
 *    the load process is stopped at the end of the phase, and every round starts it again (each
 *    address's replay budget is full again after the idle phase, so every round has the first burst).
 *    The load process runs at the lowest CPU priority (Linux `SCHED_IDLE` through `chrt --idle 0`
 *    where there is `chrt`, and `nice -n 19`): the question is what the STS does, not which process
 *    wins the machine's cores.
 *
 * Alternating rounds, and comparing the median of the rounds' p99s, keep the machine's drift (other
 * work, Postgres's checkpoints and fsyncs) out of the ratio as far as one run can.
 *
 * Prints a table per engine, round, phase and request: p50, p99 and max latency, requests, non-200
 * answers, p99 ÷ the idle p99 of the same request and round, the STS's event-loop delay (its
 * `/metrics`), replays and events the load process received per second, the CPU the STS and the load
 * process used (share of one core), and the streams refused; then per engine and request the median
 * of the rounds' p99s, idle and with streams, and their ratio (goal: ≤ 2).
 *
 * Environment: `BENCH_ENGINES` (default `pglite,postgres`); `BENCH_REPLAY_LIMITS` (default `60`: the
 * `max_replays_per_address_per_minute` values to run, e.g. `60,100000` to also see the replay
 * scheduler alone); `BENCH_CPU_PROF=<dir>` runs the STS with `--cpu-prof`; `BENCH_BASE_ROOT=<dir>` (a
 * checkout of an earlier version, with `node_modules`) adds, per engine, the same phases against the
 * STS run from that directory, every stream resuming from `Last-Event-ID: 0` (the whole feed), the
 * scenario that version did not bound.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import pg from "pg";
import { openDatabase } from "../../sts/src/db/connect.js";
import { loadDevIssuer } from "../../sts/src/identity/dev_issuer.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NODE = path.join(ROOT, "node_modules/.bin/node");
const CLIENT_ID = "bench-agent";
const RESOURCE = "https://crm.example.test";
const GENEROUS = { per_second: 1_000_000, burst: 1_000_000 };
const PER_ADDRESS = 8;
const MAX_REPLAY = 1000;

const ENTRIES = Number(process.env.BENCH_ENTRIES ?? 8000);
const PHASE_SECONDS = Number(process.env.BENCH_PHASE_SECONDS ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const STREAMS_PHASE = (perReplay: number) =>
  `${STREAMS} streams resuming ${perReplay} entries behind, in a loop`;
const STREAMS = Number(process.env.BENCH_STREAMS ?? 300);
const BASE_ROOT = process.env.BENCH_BASE_ROOT;
const REPLAY_LIMITS = (process.env.BENCH_REPLAY_LIMITS ?? "60").split(",").map(Number);
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
const APPROVAL_ID = "bench_exchange_approval";

type Engine = "pglite" | "postgres";

interface Latencies {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly count: number;
  readonly non200: number;
}

interface Row {
  readonly engine: Engine;
  readonly version: string;
  /** Which of the alternating idle/streams rounds. */
  readonly round: number;
  readonly phase: string;
  /** `client_credentials` or `token exchange`. */
  readonly request: string;
  readonly latencies: Latencies;
  readonly idleP99: number;
  readonly replaysPerSecond: number | null;
  readonly eventsPerSecond: number | null;
  readonly refused: string;
  /** CPU the STS process used, as a share of one core (user + system over wall time). */
  readonly stsCpu: number;
  /** CPU the stream load process used, as a share of one core. */
  readonly loadCpu: number | null;
  /** The STS's event-loop delay during the phase, ms. */
  readonly lag: { p99: number; max: number };
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * The STS's event-loop delay (prom-client's `monitorEventLoopDelay` over its metrics, reset at each
 * scrape): p99 and max in ms since the previous call.
 */
async function eventLoopLag(base: string): Promise<{ p99: number; max: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const value = (name: string) =>
    Number(new RegExp(`^countersign_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m").exec(text)?.[1]) *
    1000;
  return { p99: value("p99"), max: value("max") };
}

/** CPU time (user + system, ms) a process has used so far. */
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) * 1000) / 100;
  } catch {
    return 0;
  }
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

/** A Postgres server URL and how to stop it if this run started it. */
function postgresServer(): { url: string; stop: () => void } {
  if (process.env.DATABASE_URL) return { url: process.env.DATABASE_URL, stop: () => {} };
  const dir = path.join(tmpdir(), "countersign-bench-revocations-pg");
  log(`starting a throwaway PostgreSQL cluster in ${dir}`);
  const url = execFileSync(path.join(ROOT, ".ci/start-postgres.sh"), ["55493", dir], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  return {
    url,
    stop: () => {
      const bindir = execFileSync("sh", ["-c", "ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1"], {
        encoding: "utf8",
      }).trim();
      const args = [path.join(bindir, "pg_ctl"), "-D", path.join(dir, "data"), "-m", "fast", "stop"];
      const asPostgres = process.getuid?.() === 0 ? ["runuser", "-u", "postgres", "--", ...args] : args;
      try {
        execFileSync(asPostgres[0] as string, asPostgres.slice(1), { stdio: "ignore" });
      } catch {
        // already stopped
      }
    },
  };
}

async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/**
 * Seeds `ENTRIES` revoked approvals, each with one token alive for two hours, and their feed entries,
 * and the approval the token exchanges are made under. Plain SQL, valid for this version's schema and
 * earlier ones.
 * @returns the Last-Event-ID that makes a subscriber be replayed `MAX_REPLAY` entries.
 */
async function seed(url: string | undefined, dataDir: string): Promise<string> {
  const handle = await openDatabase({ url, dataDir });
  try {
    const { db } = handle;
    await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task, subject,
        max_tokens, tokens_issued, requested_by, approved_by, decided_by, decided_at, expires_at, revoked_at)
      select 'bench_rev_' || g, 'revoked', ${CLIENT_ID}, ${RESOURCE}, 'crm:read', 'crm:read', 'benchmark',
        'alice', 10, 1, ${CLIENT_ID}, 'bob', 'bob', now(), now() + interval '2 hours', now()
      from generate_series(1, ${ENTRIES}) g`.execute(db);
    await sql`insert into issued_tokens (jti, approval_id, client_id, sub, aud, scope, iat, exp)
      select 'bench_jti_' || g, 'bench_rev_' || g, ${CLIENT_ID}, 'alice', ${RESOURCE}, 'crm:read', now(),
        now() + interval '2 hours'
      from generate_series(1, ${ENTRIES}) g`.execute(db);
    await sql`insert into revocations (approval_id, reason, revoked_at)
      select 'bench_rev_' || g, 'revoked', now() from generate_series(1, ${ENTRIES}) g order by g`.execute(
      db,
    );
    await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task, max_tokens,
        requested_by, approved_by, decided_by, decided_at, expires_at)
      values (${APPROVAL_ID}, 'approved', ${CLIENT_ID}, ${RESOURCE}, 'crm:read', 'crm:read', 'benchmark',
        2000000000, ${CLIENT_ID}, 'bob', 'bob', now(), now() + interval '1 day')`.execute(db);
    const { rows } = await sql<{ cursor: string }>`select "cursor"::text as "cursor" from revocations
      order by "cursor" offset ${ENTRIES - MAX_REPLAY - 1} limit 1`.execute(db);
    const cursor = rows[0]?.cursor ?? "0";
    const epoch = await sql<{ epoch: string }>`select epoch from revocation_feed`
      .execute(db)
      .then((result) => result.rows[0]?.epoch)
      .catch(() => undefined);
    return epoch === undefined ? cursor : `${epoch}.${cursor}`;
  } finally {
    await handle.close();
  }
}

async function waitReady(base: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the STS exited with code ${child.exitCode}`);
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error("the STS did not become ready in time");
}

/**
 * `POST /token` with each of `bodies` in turn (client_secret_basic), one request at a time on one
 * keep-alive connection, so every kind of request meets the same moments of the phase: the latencies
 * of each.
 */
async function measure(
  base: string,
  authorization: string,
  bodies: readonly string[],
  seconds: number,
  warmup: number,
): Promise<Latencies[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const send = (body: string): Promise<[number, number]> =>
    new Promise((resolve, reject) => {
      const started = process.hrtime.bigint();
      const request = http.request(
        `${base}/token`,
        {
          method: "POST",
          agent,
          headers: {
            authorization,
            "content-type": "application/x-www-form-urlencoded",
            "content-length": Buffer.byteLength(body),
          },
        },
        (response) => {
          response.resume();
          response.on("end", () =>
            resolve([Number(process.hrtime.bigint() - started) / 1e6, response.statusCode ?? 0]),
          );
        },
      );
      request.on("error", reject);
      request.end(body);
    });
  for (let i = 0; i < warmup; i++) for (const body of bodies) await send(body);
  const times: number[][] = bodies.map(() => []);
  const non200 = bodies.map(() => 0);
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) {
    for (const [i, body] of bodies.entries()) {
      const [ms, status] = await send(body);
      times[i]?.push(ms);
      if (status !== 200) non200[i] = (non200[i] ?? 0) + 1;
    }
  }
  agent.destroy();
  return times.map((kind, i) => {
    kind.sort((a, b) => a - b);
    return {
      p50: percentile(kind, 50),
      p99: percentile(kind, 99),
      max: kind.at(-1) ?? Number.NaN,
      count: kind.length,
      non200: non200[i] ?? 0,
    };
  });
}

interface LoadCounts {
  replays: number;
  events: number;
  answered: number;
  refused: Record<string, number>;
  errors: number;
}

/** The stream load process: started, and ready (every stream answered 200, or its own time limit). */
interface Load {
  readonly pid: number | undefined;
  /** Its latest counts. */
  latest(): LoadCounts;
  /** Stops it; resolves with its last counts. */
  stop(): Promise<LoadCounts>;
}

async function startLoad(base: string, lastEventId: string, perReplay: number): Promise<Load> {
  // At the lowest priority: the benchmark is about the STS, not about who wins the machine's cores
  // (in a deployment, the callers' CPU is not the STS's). Linux's SCHED_IDLE (`chrt --idle 0`) where
  // there is `chrt`: it runs only on a core nothing else wants; `nice -n 19` alone still took a fifth
  // of a core from the STS and Postgres here.
  const idle = existsSync("/usr/bin/chrt") ? ["chrt", "--idle", "0"] : [];
  const child = spawn(
    idle[0] ?? "nice",
    [
      ...idle.slice(1),
      ...(idle.length > 0 ? ["nice"] : []),
      "-n",
      "19",
      NODE,
      "--import",
      "tsx",
      path.join(ROOT, "bench/revocations/streams.ts"),
      base,
      String(STREAMS),
      lastEventId,
      String(perReplay),
      String(PER_ADDRESS),
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  let counts: LoadCounts = { replays: 0, events: 0, answered: 0, refused: {}, errors: 0 };
  let ready: () => void = () => {};
  const isReady = new Promise<void>((resolve) => {
    ready = resolve;
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  lines.on("line", (line) => {
    if (line === "ready") ready();
    else if (line.startsWith("{")) {
      counts = JSON.parse(line) as LoadCounts;
      if (process.env.BENCH_DEBUG) log(`load: ${line}`);
    }
  });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error("the stream load process never became ready")), 120_000).unref(),
  );
  try {
    await Promise.race([isReady, timeout]);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return {
    pid: child.pid,
    latest: () => counts,
    async stop() {
      child.kill("SIGTERM");
      await Promise.race([once(child, "exit"), new Promise((resolve) => setTimeout(resolve, 15_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      return counts;
    },
  };
}

async function runEngine(
  engine: Engine,
  root: string,
  version: string,
  replaysPerMinute: number | undefined,
  lastEventIdOverride?: string,
): Promise<Row[]> {
  const work = mkdtempSync(path.join(tmpdir(), "countersign-bench-revocations-"));
  const postgres = engine === "postgres" ? postgresServer() : undefined;
  const databaseName = `countersign_bench_rev_${process.pid}_${Date.now()}`;
  let databaseUrl: string | undefined;
  let sts: ChildProcess | undefined;
  try {
    if (postgres) {
      await adminQuery(postgres.url, `create database ${databaseName}`);
      const parsed = new URL(postgres.url);
      parsed.pathname = `/${databaseName}`;
      databaseUrl = parsed.toString();
    }
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const secret = randomBytes(32).toString("base64url");
    const configFile = path.join(work, "config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        issuer: base,
        resources: [{ id: RESOURCE, scopes: ["crm:read"], max_ttl_seconds: 300 }],
        clients: [
          { client_id: CLIENT_ID, client_secret: secret, token_endpoint_auth_method: "client_secret_basic" },
        ],
        issuance_limits: { per_client: GENEROUS, per_approval: GENEROUS, client_credentials: GENEROUS },
        ...(replaysPerMinute === undefined
          ? {}
          : { revocations: { max_replays_per_address_per_minute: replaysPerMinute } }),
        dev_mode: true,
      }),
    );
    const dataDir = path.join(work, "data");
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      PORT: String(port),
      HOST: "127.0.0.1",
      COUNTERSIGN_CONFIG: configFile,
      COUNTERSIGN_DATA_DIR: dataDir,
      LOG_LEVEL: "warn",
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    };
    execFileSync(NODE, [path.join(root, "bin/countersign.js"), "migrate"], {
      cwd: root,
      env,
      stdio: "ignore",
    });
    const replayFrom = await seed(databaseUrl, dataDir);
    // The development issuer's key, created in the data directory before the STS reads it.
    const devIssuer = await loadDevIssuer({ issuer: base, dataDir });
    const lastEventId = lastEventIdOverride ?? replayFrom;
    const perReplay = lastEventIdOverride === "0" ? ENTRIES : MAX_REPLAY;
    const profile = process.env.BENCH_CPU_PROF
      ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`]
      : [];
    sts = spawn(NODE, [...profile, path.join(root, "bin/countersign.js"), "serve"], {
      cwd: root,
      env,
      stdio: ["ignore", "inherit", "inherit"],
    });
    await waitReady(base, sts);
    log(
      `${engine} (${version}): STS ready at ${base}; ${ENTRIES} feed entries; streams resume from ${lastEventId}`,
    );

    const authorization = `Basic ${Buffer.from(`${CLIENT_ID}:${secret}`).toString("base64")}`;
    const subjectToken = await devIssuer.mint({ sub: "alice", usage: "subject", ttlSeconds: 7200 });
    const requests: Array<[string, string]> = [
      ["client_credentials", "grant_type=client_credentials&scope=approvals%3Arequest"],
      [
        "token exchange",
        new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: JWT_TYPE,
          resource: RESOURCE,
          scope: "crm:read",
          authorization_details: JSON.stringify([{ type: "agent_task", approval_id: APPROVAL_ID }]),
        }).toString(),
      ],
    ];

    /** Measures every request kind for PHASE_SECONDS; the STS's CPU and event-loop delay over the phase. */
    const phase = async (warmup: number) => {
      await eventLoopLag(base);
      const at = performance.now();
      const cpu = cpuMs(sts?.pid);
      const latencies = await measure(
        base,
        authorization,
        requests.map(([, body]) => body),
        PHASE_SECONDS,
        warmup,
      );
      const elapsedMs = performance.now() - at;
      return {
        latencies,
        elapsedMs,
        stsCpu: (cpuMs(sts?.pid) - cpu) / elapsedMs,
        lag: await eventLoopLag(base),
      };
    };

    const describe = (latencies: Latencies[]) =>
      latencies.map((l) => `p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms`).join("; ");
    const rows: Row[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const idle = await phase(round === 1 ? 100 : 0);
      log(`${engine} (${version}) round ${round} idle: ${describe(idle.latencies)}`);
      const load = await startLoad(base, lastEventId, perReplay);
      const before = { load: cpuMs(load.pid), counts: load.latest() };
      const busy = await phase(0);
      const during = load.latest();
      const loadCpu = (cpuMs(load.pid) - before.load) / busy.elapsedMs;
      const counts = await load.stop();
      log(
        `${engine} (${version}) round ${round} ${STREAMS} streams: ${describe(busy.latencies)}; ${JSON.stringify(counts)}`,
      );
      const refused = [
        ...(counts.answered < STREAMS ? [`${STREAMS - counts.answered} never answered`] : []),
        ...Object.entries(counts.refused).map(([status, n]) => `${n}×${status}`),
        ...(counts.errors > 0 ? [`${counts.errors} errors`] : []),
      ].join(", ");
      const seconds = busy.elapsedMs / 1000;
      rows.push(
        ...requests.flatMap(([request], i): Row[] => [
          {
            engine,
            version,
            round,
            phase: "idle",
            request,
            latencies: idle.latencies[i] as Latencies,
            idleP99: (idle.latencies[i] as Latencies).p99,
            replaysPerSecond: null,
            eventsPerSecond: null,
            refused: "",
            stsCpu: idle.stsCpu,
            loadCpu: null,
            lag: idle.lag,
          },
          {
            engine,
            version,
            round,
            phase: STREAMS_PHASE(perReplay),
            request,
            latencies: busy.latencies[i] as Latencies,
            idleP99: (idle.latencies[i] as Latencies).p99,
            // Over the whole phase (both request kinds), to the load process's last report.
            replaysPerSecond: (during.replays - before.counts.replays) / seconds,
            eventsPerSecond: (during.events - before.counts.events) / seconds,
            refused,
            stsCpu: busy.stsCpu,
            loadCpu,
            lag: busy.lag,
          },
        ]),
      );
    }
    return rows;
  } finally {
    if (sts && sts.exitCode === null) {
      sts.kill("SIGTERM");
      await Promise.race([once(sts, "exit"), new Promise((resolve) => setTimeout(resolve, 10_000))]);
      if (sts.exitCode === null) sts.kill("SIGKILL");
    }
    if (postgres) {
      await adminQuery(postgres.url, `drop database if exists ${databaseName} with (force)`).catch(() => {});
      postgres.stop();
    }
    rmSync(work, { recursive: true, force: true });
  }
}

const fmt = (value: number | null, digits = 1) =>
  value === null
    ? ""
    : value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

const percent = (share: number) => `${Math.round(share * 100)}%`;

function table(rows: readonly Row[]): string {
  const lines = [
    "| engine | version | round | phase | request | p50 ms | p99 ms | max ms | requests | non-200 | p99 ÷ idle p99 | STS event-loop delay p99 / max ms | replays/s | events/s | STS CPU | load CPU | streams refused |",
    "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const row of rows) {
    const { latencies: l } = row;
    lines.push(
      `| ${row.engine} | ${row.version} | ${row.round} | ${row.phase} | ${row.request} | ${fmt(l.p50, 2)} | ${fmt(l.p99, 2)} | ${fmt(l.max, 1)} | ${l.count} | ${l.non200} | ${fmt(l.p99 / row.idleP99, 2)} | ${fmt(row.lag.p99, 1)} / ${fmt(row.lag.max, 1)} | ${fmt(row.replaysPerSecond, 0)} | ${fmt(row.eventsPerSecond, 0)} | ${percent(row.stsCpu)} | ${row.loadCpu === null ? "" : percent(row.loadCpu)} | ${row.refused} |`,
    );
  }
  return lines.join("\n");
}

const rows: Row[] = [];
const engines = (process.env.BENCH_ENGINES ?? "pglite,postgres").split(",") as Engine[];
for (const engine of engines) {
  for (const limit of REPLAY_LIMITS) {
    rows.push(...(await runEngine(engine, ROOT, `this, ${limit} replays/min/address`, limit)));
  }
  if (BASE_ROOT) rows.push(...(await runEngine(engine, BASE_ROOT, "base", undefined, "0")));
}
const cpu = cpus()[0]?.model ?? "unknown CPU";
console.log(
  `Node ${process.version}, ${cpu} (${cpus().length} cores); ${ENTRIES} feed entries; ${PHASE_SECONDS} s of ` +
    `sequential POST /token per phase (the request kinds in turn), ${ROUNDS} rounds of idle then streams; ${STREAMS} streams, ${PER_ADDRESS} per local address.\n`,
);
console.log(table(rows));
const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};
const verdicts: string[] = [];
const groups = new Map<string, Row[]>();
for (const row of rows) {
  const key = `${row.engine}, ${row.request} (${row.version})`;
  groups.set(key, [...(groups.get(key) ?? []), row]);
}
for (const [key, group] of groups) {
  const idle = median(group.filter((row) => row.phase === "idle").map((row) => row.latencies.p99));
  const busy = median(group.filter((row) => row.phase !== "idle").map((row) => row.latencies.p99));
  const ratios = group.filter((row) => row.phase !== "idle").map((row) => row.latencies.p99 / row.idleP99);
  const goal = key.includes("(this") ? ` (goal ≤ 2: ${busy <= 2 * idle ? "met" : "not met"})` : "";
  verdicts.push(
    `${key}: median p99 idle ${fmt(idle, 2)} ms, streams ${fmt(busy, 2)} ms: ${fmt(busy / idle, 2)} × idle${goal}; per round ${ratios.map((ratio) => fmt(ratio, 2)).join(", ")}`,
  );
}
console.log(`\n${verdicts.join("\n")}`);
