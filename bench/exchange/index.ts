/**
 * Token exchange benchmark: `npx tsx bench/exchange/index.ts [durationSeconds] [connections]`.
 *
 * A real Postgres (`DATABASE_URL`, else a throwaway Debian PostgreSQL cluster started with
 * `.ci/start-postgres.sh`, fsync off), in which a fresh database is created for the run and dropped at
 * the end. The STS runs as a child process (`node bin/countersign.js serve`, the project's Node 22) with
 * a config written to a temporary directory; autocannon drives it from this process over 127.0.0.1, so
 * the load generator never shares the STS's event loop (it does share the machine's cores).
 *
 * In one run, after a warm-up of each: oidc-provider's own `client_credentials` grant on the same
 * server (the baseline), then the RFC 8693 token exchange (dev-issuer subject JWT, one resource,
 * approvals with budgets far above what the run can use, `client_secret_basic`) twice: every
 * connection under one approval, then each connection under an approval of its own. Reported: requests/s,
 * p50/p99 latency, errors and non-2xx answers, the STS's peak RSS (`VmHWM`), and the ratio
 * exchange / client_credentials. Afterwards the run checks `tokens_issued` equals the issued-token rows.
 *
 * Environment: `BENCH_DURATION` (seconds per measurement, default 12), `BENCH_WARMUP` (seconds, default
 * 4), `BENCH_CONNECTIONS` (default 32), `BENCH_CPU_PROF=<dir>` (run the STS with `--cpu-prof` into that
 * directory), `BENCH_EXCHANGE_ONLY=1` (skip the baseline, for a profile of the exchange alone),
 * `BENCH_PG_TRANSPORT=unix` (the STS reaches the throwaway cluster over its Unix socket instead of TCP),
 * `DATABASE_POOL_SIZE` (passed to the STS).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import autocannon, { type AutocannonResult } from "autocannon";
import pg from "pg";
import { loadDevIssuer } from "../../sts/src/identity/dev_issuer.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NODE = path.join(ROOT, "node_modules/.bin/node");
const RESOURCE = "https://crm.example.test";
const CLIENT_ID = "bench-agent";
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";
const GENEROUS = { per_second: 1_000_000, burst: 1_000_000 };

/** Options of {@link runExchangeBenchmark}. */
export interface ExchangeBenchOptions {
  /** Seconds each measurement lasts. Default 12. */
  readonly durationSeconds?: number;
  /** Seconds of warm-up for each grant before measuring. Default 4. */
  readonly warmupSeconds?: number;
  /** Concurrent HTTP connections (keep-alive, no pipelining). Default 32. */
  readonly connections?: number;
  /** Directory for the STS's `--cpu-prof` output; unset: no profiling. */
  readonly cpuProfileDir?: string;
  /** Extra environment for the STS (e.g. `DATABASE_POOL_SIZE`). */
  readonly stsEnv?: Readonly<Record<string, string>>;
  /**
   * How the STS reaches a Postgres cluster this run started: `tcp` (127.0.0.1, the default) or `unix`
   * (its Unix socket). With everything on one machine, loopback TCP charges the receiving side's TCP
   * processing to the sender's CPU; a Unix socket does not. Ignored when `DATABASE_URL` is set.
   */
  readonly postgresTransport?: "unix" | "tcp";
  /** Skip the client_credentials baseline (profiling the exchange alone). Default false. */
  readonly exchangeOnly?: boolean;
  /** Progress lines go here. Default: stderr. */
  readonly log?: (line: string) => void;
}

/** One measured grant. */
export interface GrantRow {
  readonly name: string;
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly total: number;
  /** Connection errors and timeouts. */
  readonly errors: number;
  readonly non2xx: number;
  /** CPU time the STS used per request, ms (user + system over the measurement ÷ requests). */
  readonly stsCpuMs: number;
  /** CPU time Postgres used per request, ms; null when the run did not start Postgres itself. */
  readonly pgCpuMs: number | null;
}

export interface ExchangeBenchResult {
  readonly clientCredentials: GrantRow;
  /** Every exchange under one approval (one hot row: the case batching is for). */
  readonly exchange: GrantRow;
  /** The same load spread over one approval per connection (no two in flight share an approval). */
  readonly spread: GrantRow;
  /** exchange requests/s ÷ client_credentials requests/s. */
  readonly ratio: number;
  /** spread requests/s ÷ client_credentials requests/s. */
  readonly spreadRatio: number;
  /** Peak resident set of the STS process(es), MiB (`VmHWM`; summed over workers). */
  readonly peakRssMiB: number;
  /** `tokens_issued` summed over the run's approvals and the count of their `issued_tokens` rows, after it. */
  readonly budget: { tokensIssued: number; issuedTokenRows: number };
  /** Where Postgres came from, for the write-up. */
  readonly database: string;
  /** The STS's `DATABASE_POOL_SIZE` in this run. */
  readonly poolSize: string;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly markdown: string;
}

export function freePort(): Promise<number> {
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

/** A Postgres server URL (no database chosen yet) and how to stop it if this run started it. */
function startPostgres(log: (line: string) => void): {
  url: string;
  note: string;
  pid: number | undefined;
  /** The cluster's Unix socket directory, when this run started it. */
  socketDir?: string;
  stop: () => void;
} {
  if (process.env.DATABASE_URL) {
    return {
      url: process.env.DATABASE_URL,
      note: "the Postgres at DATABASE_URL",
      pid: undefined,
      stop: () => {},
    };
  }
  const dir = path.join(tmpdir(), "countersign-bench-pg");
  const port = "55491";
  log(`starting a throwaway PostgreSQL cluster in ${dir} on 127.0.0.1:${port}`);
  const url = execFileSync(path.join(ROOT, ".ci/start-postgres.sh"), [port, dir], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  const version = (() => {
    try {
      return execFileSync("psql", ["--version"], { encoding: "utf8" }).trim();
    } catch {
      return "PostgreSQL";
    }
  })();
  const pid = Number.parseInt(readProc(path.join(dir, "data/postmaster.pid")).split("\n")[0] ?? "", 10);
  return {
    url,
    socketDir: dir,
    pid: Number.isInteger(pid) ? pid : undefined,
    note: `a throwaway cluster (.ci/start-postgres.sh: Debian's ${version.replace(/^psql \(PostgreSQL\) /, "PostgreSQL ")}, fsync=off, synchronous_commit=off)`,
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

export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

export async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

async function waitReady(base: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the STS exited with code ${child.exitCode}`);
    try {
      const response = await fetch(`${base}/readyz`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error("the STS did not become ready in time");
}

function readProc(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** A process and its descendants (cluster workers, Postgres backends). */
function processTree(pid: number): number[] {
  const all: number[] = [];
  const stack = [pid];
  while (stack.length > 0) {
    const p = stack.pop() as number;
    all.push(p);
    stack.push(...readProc(`/proc/${p}/task/${p}/children`).trim().split(/\s+/).filter(Boolean).map(Number));
  }
  return all;
}

/** Peak RSS (VmHWM, KiB) of a process and its descendants. */
export function peakRssKiB(pid: number): number {
  return processTree(pid).reduce(
    (sum, p) => sum + Number(/VmHWM:\s+(\d+)/.exec(readProc(`/proc/${p}/status`))?.[1] ?? 0),
    0,
  );
}

const CLOCK_TICKS_PER_SECOND = 100;

/**
 * CPU time (user + system, ms) a process tree has used so far, including reaped children
 * (`cutime`/`cstime`, so Postgres backends that exited still count).
 */
export function cpuMs(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    const stat = readProc(`/proc/${p}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields after the command: state is index 0, so utime/stime/cutime/cstime are 11..14.
    for (const index of [11, 12, 13, 14]) ticks += Number(fields[index] ?? 0);
  }
  return (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
}

function rowOf(name: string, result: AutocannonResult, cpu: { sts: number; pg: number | null }): GrantRow {
  return {
    stsCpuMs: cpu.sts / result.requests.total,
    pgCpuMs: cpu.pg === null ? null : cpu.pg / result.requests.total,
    name,
    requestsPerSecond: result.requests.total / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    total: result.requests.total,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

const fmt = (value: number, digits = 0) =>
  value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdownOf(result: Omit<ExchangeBenchResult, "markdown">): string {
  const header =
    "| grant | requests/s | p50 ms | p99 ms | requests | errors | non-2xx | STS CPU ms/req | Postgres CPU ms/req |\n" +
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |";
  const line = (row: GrantRow) =>
    `| ${row.name} | ${fmt(row.requestsPerSecond)} | ${fmt(row.p50Ms, 1)} | ${fmt(row.p99Ms, 1)} | ${fmt(row.total)} | ${row.errors} | ${row.non2xx} | ${fmt(row.stsCpuMs, 2)} | ${row.pgCpuMs === null ? "n/a" : fmt(row.pgCpuMs, 2)} |`;
  const targets = (row: GrantRow, ratio: number) =>
    [
      ["≥ 1,500 exchanges/s", row.requestsPerSecond >= 1500],
      ["p99 ≤ 50 ms", row.p99Ms <= 50],
      ["zero errors", row.errors === 0 && row.non2xx === 0],
      ["≥ 0.5 × client_credentials", ratio >= 0.5],
    ] as const;
  const verdict = (row: GrantRow, ratio: number) =>
    targets(row, ratio)
      .map(([name, met]) => `${name} ${met ? "met" : "**not met**"}`)
      .join("; ");
  return [
    header,
    line(result.clientCredentials),
    line(result.exchange),
    line(result.spread),
    "",
    `exchange / client_credentials = **${fmt(result.ratio, 2)}** (one approval), **${fmt(result.spreadRatio, 2)}** (one per connection); STS peak RSS (VmHWM) ${fmt(result.peakRssMiB, 0)} MiB; ` +
      `${result.connections} connections, ${result.durationSeconds} s each after a warm-up; STS pool ${result.poolSize} connections; ` +
      `after the run tokens_issued = ${result.budget.tokensIssued}, issued_tokens rows = ${result.budget.issuedTokenRows}.`,
    "",
    `Targets, one approval: ${verdict(result.exchange, result.ratio)}. One approval per connection: ${verdict(result.spread, result.spreadRatio)}.`,
  ].join("\n");
}

/** A running STS child process for a benchmark, and what a load generator needs to call it. */
export interface SpawnedSts {
  readonly child: ChildProcess;
  readonly base: string;
  /** A dev-issuer subject token for `alice` (an hour). */
  readonly subjectToken: string;
  /**
   * A fresh dev-issuer approver token for `bench-approver`, for the approval API (approver tokens must
   * be younger than `approver_max_age_seconds`, so mint one per use).
   */
  approverToken(): Promise<string>;
  /** `authorization` (client_secret_basic of the bench agent) and the form content type. */
  readonly headers: Readonly<Record<string, string>>;
  /** The STS's environment (e.g. its `DATABASE_POOL_SIZE`). */
  readonly env: Readonly<Record<string, string>>;
  /** Stops the STS (SIGTERM, SIGKILL after 20 s) and waits for it to exit. */
  stop(): Promise<void>;
}

/**
 * Starts `node bin/countersign.js serve` on a free 127.0.0.1 port against `databaseUrl`, with a config
 * in `work` (one resource, the bench agent with generous issuance limits, dev mode), and waits until
 * `/readyz` answers.
 */
export async function spawnBenchSts(options: {
  readonly databaseUrl: string;
  readonly work: string;
  readonly stsEnv?: Readonly<Record<string, string>> | undefined;
  readonly nodeArgs?: readonly string[];
}): Promise<SpawnedSts> {
  const { databaseUrl, work } = options;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const secret = randomBytes(32).toString("base64url");
  const configFile = path.join(work, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      issuer: base,
      resources: [{ id: RESOURCE, scopes: ["crm:read", "crm:write"], max_ttl_seconds: 300 }],
      clients: [
        { client_id: CLIENT_ID, client_secret: secret, token_endpoint_auth_method: "client_secret_basic" },
      ],
      issuance_limits: { per_client: GENEROUS, per_approval: GENEROUS, client_credentials: GENEROUS },
      dev_mode: true,
    }),
  );
  const dataDir = path.join(work, "data");
  const devIssuer = await loadDevIssuer({ issuer: base, dataDir });
  const subjectToken = await devIssuer.mint({ sub: "alice", usage: "subject", ttlSeconds: 3600 });
  const approverToken = () => devIssuer.mint({ sub: "bench-approver", usage: "approver", ttlSeconds: 600 });
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    PORT: String(port),
    HOST: "127.0.0.1",
    COUNTERSIGN_CONFIG: configFile,
    COUNTERSIGN_DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    LOG_LEVEL: "warn",
    ...options.stsEnv,
  };
  const child = spawn(NODE, [...(options.nodeArgs ?? []), path.join(ROOT, "bin/countersign.js"), "serve"], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitReady(base, child, 60_000);
  } catch (error) {
    await stop();
    throw error;
  }
  const authorization = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(secret)}`).toString("base64")}`;
  return {
    child,
    base,
    subjectToken,
    approverToken,
    headers: { authorization, "content-type": "application/x-www-form-urlencoded" },
    env,
    stop,
  };
}

/** Inserts approved approvals for the bench agent, with budgets far above what a run can use. */
export async function insertBenchApprovals(pool: pg.Pool, ids: readonly string[]): Promise<void> {
  await pool.query(
    `insert into approvals (id, status, client_id, resource, scope, requested_scope, task, max_tokens,
       requested_by, approved_by, decided_by, decided_at, expires_at)
     select id, 'approved', $2, $3, 'crm:read crm:write', 'crm:read crm:write', 'benchmark', 2000000000,
       $2, 'bench-approver', 'bench-approver', now(), now() + interval '1 day'
     from unnest(cast($1 as text[])) as id`,
    [ids, CLIENT_ID, RESOURCE],
  );
}

/** The form body of an RFC 8693 exchange for `crm:read` under `approvalId`. */
export function exchangeBodyFor(subjectToken: string, approvalId: string): string {
  return new URLSearchParams({
    grant_type: TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: JWT_TYPE,
    resource: RESOURCE,
    scope: "crm:read",
    authorization_details: JSON.stringify([{ type: "agent_task", approval_id: approvalId }]),
  }).toString();
}

/** Options of {@link startBenchSts}. */
export interface BenchStsOptions {
  /** Approvals for the spread case (one per connection). */
  readonly connections: number;
  /** Directory for the STS's `--cpu-prof` output; unset: no profiling. */
  readonly cpuProfileDir?: string;
  /** Extra Node options for the STS (e.g. `--heapsnapshot-signal=SIGUSR2`). */
  readonly nodeArgs?: readonly string[];
  /** Extra environment for the STS (e.g. `DATABASE_POOL_SIZE`). */
  readonly stsEnv?: Readonly<Record<string, string>>;
  /** See {@link ExchangeBenchOptions.postgresTransport}. */
  readonly postgresTransport?: "unix" | "tcp";
  readonly log: (line: string) => void;
}

/** An STS child process on a database of its own, seeded with approvals, and the requests to load it with. */
export interface BenchSts {
  /** `http://127.0.0.1:<port>`. */
  readonly base: string;
  readonly pid: number;
  /** The Postgres cluster's pid, when this run started it. */
  readonly postgresPid: number | undefined;
  /** A pool (2 connections) on the run's database. */
  readonly pool: pg.Pool;
  /** `Authorization` (client_secret_basic) and `Content-Type` of a token request. */
  readonly headers: Readonly<Record<string, string>>;
  readonly clientCredentialsBody: string;
  /** An exchange under the one shared approval. */
  readonly exchangeBody: string;
  /** One exchange body per spread approval. */
  readonly spreadBodies: readonly string[];
  /** The shared approval's id, then the spread ones. */
  readonly approvalIds: readonly string[];
  /** Where Postgres came from, for the write-up. */
  readonly database: string;
  /** The STS's `DATABASE_POOL_SIZE`. */
  readonly poolSize: string;
  /** Stops the STS, drops the database, removes the temporary files (and a cluster this run started). */
  stop(): Promise<void>;
}

/**
 * Starts the STS as a child process (`node bin/countersign.js serve`) on a fresh database in the
 * Postgres at `DATABASE_URL` (else a throwaway cluster), with one agent, one approval and
 * `options.connections` more, budgets far above any run, and checks each grant answers 200 once.
 * Cleans up after itself if start-up fails.
 */
export async function startBenchSts(options: BenchStsOptions): Promise<BenchSts> {
  const { log, connections } = options;
  const postgres = startPostgres(log);
  const databaseName = `countersign_bench_${process.pid}_${Date.now()}`;
  await adminQuery(postgres.url, `create database ${databaseName}`);
  const adminUrl = withDatabase(postgres.url, databaseName);
  // The STS reaches a cluster this run started over TCP, or its Unix socket when told to: see
  // ExchangeBenchOptions.postgresTransport.
  const overSocket = postgres.socketDir !== undefined && options.postgresTransport === "unix";
  const databaseUrl = overSocket
    ? `${adminUrl}?host=${encodeURIComponent(postgres.socketDir as string)}`
    : adminUrl;
  const work = mkdtempSync(path.join(tmpdir(), "countersign-bench-"));
  let sts: SpawnedSts | undefined;
  const pool = new pg.Pool({ connectionString: adminUrl, max: 2 });
  const stop = async (): Promise<void> => {
    await sts?.stop();
    await pool.end().catch(() => {});
    await adminQuery(postgres.url, `drop database if exists ${databaseName} with (force)`).catch(() => {});
    rmSync(work, { recursive: true, force: true });
    postgres.stop();
  };
  try {
    const nodeArgs = [
      ...(options.cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`] : []),
      ...(options.nodeArgs ?? []),
    ];
    sts = await spawnBenchSts({ databaseUrl, work, stsEnv: options.stsEnv, nodeArgs });
    const { base, headers, child } = sts;
    log(`STS ready at ${base} (pid ${child.pid})`);

    const approvalId = `bench-${randomBytes(8).toString("hex")}`;
    // The spread case: one approval per connection (no two concurrent exchanges share an approval).
    const spreadIds = Array.from({ length: connections }, (_, i) => `${approvalId}-${i}`);
    await insertBenchApprovals(pool, [approvalId, ...spreadIds]);

    const clientCredentialsBody = new URLSearchParams({
      grant_type: "client_credentials",
      scope: "approvals:request",
    }).toString();
    const exchangeBody = exchangeBodyFor(sts.subjectToken, approvalId);
    const spreadBodies = spreadIds.map((id) => exchangeBodyFor(sts?.subjectToken ?? "", id));

    for (const [name, body] of [
      ["client_credentials", clientCredentialsBody],
      ["token exchange", exchangeBody],
      ["token exchange (spread)", spreadBodies[0] as string],
    ] as const) {
      const response = await fetch(`${base}/token`, { method: "POST", headers, body });
      const answer = await response.text();
      if (response.status !== 200) throw new Error(`${name} sanity request: ${response.status} ${answer}`);
    }
    return {
      base,
      pid: sts.child.pid as number,
      postgresPid: postgres.pid,
      pool,
      headers,
      clientCredentialsBody,
      exchangeBody,
      spreadBodies,
      approvalIds: [approvalId, ...spreadIds],
      database: `${postgres.note}; the STS connects over ${overSocket ? "its Unix socket" : "TCP"}`,
      poolSize: sts.env.DATABASE_POOL_SIZE ?? "10 (the default)",
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Options of {@link loadSts}: autocannon's, for `POST /token`. */
export interface LoadOptions {
  readonly connections: number;
  /** Seconds. */
  readonly duration: number;
  /** Requests per second over all connections; unset: as fast as the STS answers. */
  readonly overallRate?: number;
}

/**
 * Drives `POST /token` with autocannon: every request `body`, or `"spread"`: each connection sends the
 * exchange for a spread approval of its own.
 */
export function loadSts(sts: BenchSts, body: string, options: LoadOptions): Promise<AutocannonResult> {
  let nextSlot = 0;
  const perConnection =
    body === "spread"
      ? {
          requests: [
            {
              setupRequest: (request: Record<string, unknown>, context: Record<string, unknown>) => {
                if (typeof context.slot !== "number") context.slot = nextSlot++;
                return {
                  ...request,
                  body: sts.spreadBodies[(context.slot as number) % sts.spreadBodies.length],
                };
              },
            },
          ],
        }
      : { body };
  return Promise.resolve(
    autocannon({
      url: `${sts.base}/token`,
      method: "POST",
      headers: { ...sts.headers },
      connections: options.connections,
      duration: options.duration,
      timeout: 10,
      ...(options.overallRate === undefined ? {} : { overallRate: options.overallRate }),
      ...perConnection,
    }),
  );
}

/** Runs the benchmark once (see the file comment). Stops everything it started, whatever happens. */
export async function runExchangeBenchmark(options: ExchangeBenchOptions = {}): Promise<ExchangeBenchResult> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const durationSeconds = options.durationSeconds ?? 12;
  const warmupSeconds = options.warmupSeconds ?? 4;
  const connections = options.connections ?? 32;

  const sts = await startBenchSts({
    connections,
    log,
    ...(options.cpuProfileDir === undefined ? {} : { cpuProfileDir: options.cpuProfileDir }),
    ...(options.stsEnv === undefined ? {} : { stsEnv: options.stsEnv }),
    ...(options.postgresTransport === undefined ? {} : { postgresTransport: options.postgresTransport }),
  });
  try {
    const { clientCredentialsBody, exchangeBody } = sts;
    const stsPid = sts.pid;
    const load = (body: string, duration: number) => loadSts(sts, body, { connections, duration });
    const measure = async (name: string, body: string) => {
      log(`${name}: ${durationSeconds} s at ${connections} connections`);
      const before = {
        sts: cpuMs(stsPid),
        pg: sts.postgresPid === undefined ? null : cpuMs(sts.postgresPid),
      };
      const result = await load(body, durationSeconds);
      const pgAfter = sts.postgresPid === undefined ? null : cpuMs(sts.postgresPid);
      return rowOf(name, result, {
        sts: cpuMs(stsPid) - before.sts,
        pg: pgAfter === null || before.pg === null ? null : pgAfter - before.pg,
      });
    };
    log(`warm-up: ${warmupSeconds} s each`);
    if (!options.exchangeOnly) await load(clientCredentialsBody, warmupSeconds);
    await load(exchangeBody, warmupSeconds);
    const clientCredentials = options.exchangeOnly
      ? rowOf("(skipped)", await load(clientCredentialsBody, 0.1), { sts: 0, pg: null })
      : await measure("oidc-provider `client_credentials` (baseline)", clientCredentialsBody);
    const exchange = await measure("RFC 8693 token exchange, one approval", exchangeBody);
    await load("spread", warmupSeconds);
    const spread = await measure(
      `RFC 8693 token exchange, ${connections} approvals (one per connection)`,
      "spread",
    );
    const peakRssMiB = peakRssKiB(stsPid) / 1024;

    const counts = await sts.pool.query<{ tokens_issued: number; rows: string }>(
      `select sum(a.tokens_issued) as tokens_issued,
              (select count(*) from issued_tokens t where t.approval_id = any($1)) as rows
         from approvals a where a.id = any($1)`,
      [sts.approvalIds],
    );
    const budget = {
      tokensIssued: Number(counts.rows[0]?.tokens_issued ?? -1),
      issuedTokenRows: Number(counts.rows[0]?.rows ?? -1),
    };
    const partial = {
      clientCredentials,
      exchange,
      spread,
      ratio: exchange.requestsPerSecond / clientCredentials.requestsPerSecond,
      spreadRatio: spread.requestsPerSecond / clientCredentials.requestsPerSecond,
      peakRssMiB,
      budget,
      poolSize: sts.poolSize,
      database: sts.database,
      connections,
      durationSeconds,
    };
    return { ...partial, markdown: markdownOf(partial) };
  } finally {
    await sts.stop();
  }
}

/** `cores × model, Node version` for the write-up. */
export function machineLine(): string {
  const cpu = cpus();
  return `Node ${process.version}, ${cpu.length} × ${cpu[0]?.model.trim() ?? "unknown CPU"}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = process.env;
  const stsEnv: Record<string, string> = {};
  for (const key of ["DATABASE_POOL_SIZE"]) {
    const value = env[key];
    if (value !== undefined) stsEnv[key] = value;
  }
  const result = await runExchangeBenchmark({
    durationSeconds: Number(process.argv[2] ?? env.BENCH_DURATION ?? 12),
    warmupSeconds: Number(env.BENCH_WARMUP ?? 4),
    connections: Number(process.argv[3] ?? env.BENCH_CONNECTIONS ?? 32),
    ...(env.BENCH_CPU_PROF ? { cpuProfileDir: path.resolve(env.BENCH_CPU_PROF) } : {}),
    exchangeOnly: env.BENCH_EXCHANGE_ONLY === "1",
    postgresTransport: env.BENCH_PG_TRANSPORT === "unix" ? "unix" : "tcp",
    stsEnv,
  });
  process.stdout.write(`${machineLine()}; Postgres: ${result.database}\n\n${result.markdown}\n`);
}
