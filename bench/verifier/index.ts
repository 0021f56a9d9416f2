/**
 * Gateway verifier benchmark: `npx tsx bench/verifier/index.ts [durationMs] [rounds] [inFlight]`.
 *
 * One process. Every case verifies the same pool of distinct ES256 access tokens (so "uncached" really
 * is uncached). "ours" runs with every check on: static JWKS, iss/aud/typ/exp/nbf/iat/max age,
 * approval_id, act depth, revocation set (polled from a local feed holding 1,000 revoked approvals),
 * a required scope and a per-(client, approval) token bucket.
 *
 * Two sections, measured in the same interleaved rounds:
 * - sequential: one verification at a time (`await` each), as a single caller sees it;
 * - concurrent: `inFlight` verifications kept in flight (default 64), as a busy gateway sees it. Here
 *   a verification on libuv's thread pool (raw `crypto.verify` with a callback, ours in "threadpool"
 *   mode, jose's WebCrypto) can use the other cores while the event loop goes on; a synchronous one
 *   (raw `crypto.verify`, ours "inline", fast-jwt) runs on the event loop whatever the concurrency.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus, loadavg } from "node:os";
import { createVerifier as createFastJwtVerifier } from "fast-jwt";
import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from "jose";
import { createVerifier } from "../../gateway-verifier/src/index.js";

const ISSUER = "http://127.0.0.1:8080";
const AUDIENCE = "https://crm.example.test";
const POOL = 1000;

export type Section = "sequential" | "concurrent";

export interface BenchRow {
  name: string;
  section: Section;
  /** Median round, operations per wall-clock second. */
  opsPerSecond: number;
  /** Median round, operations per CPU second of the process (all threads: the thread pool too). */
  opsPerCpuSecond: number;
  /** Median over rounds of the wall-clock ratio to raw synchronous crypto.verify (same section, same round). */
  relativeWall: number;
  /** Median over rounds of the ops-per-CPU-second ratio to raw synchronous crypto.verify (same section, same round). */
  relative: number;
  /** Concurrent section: median wall-clock ratio to raw crypto.verify with a callback (thread pool), same round. */
  relativeWallThreadpool?: number;
  /** Concurrent section: median ops-per-CPU-second ratio to raw crypto.verify with a callback, same round. */
  relativeThreadpool?: number;
}

/** One case against another, round by round (both measured in every round). */
export interface HeadToHead {
  section: Section;
  case: string;
  against: string;
  /** Median over rounds of the ratio of wall-clock ops/s. */
  wall: number;
  /** Median over rounds of the ratio of ops per CPU second. */
  cpu: number;
  /** Rounds in which `case` had more wall-clock ops/s than `against`, out of `rounds`. */
  roundsAhead: number;
  rounds: number;
}

export interface VerifierBenchResult {
  rows: BenchRow[];
  headToHead: HeadToHead[];
  markdown: string;
}

type Op = (i: number) => unknown;

interface Case {
  name: string;
  section: Section;
  op: Op;
  /** The section's baselines: raw synchronous verify, raw verify on the thread pool. */
  baseline?: "sync" | "threadpool";
}

interface Sample {
  /** Operations per wall-clock second. */
  wall: number;
  /** Operations per second of CPU time used by the process (user + system, all threads). */
  cpu: number;
}

function sample(count: number, start: number, cpuStart: NodeJS.CpuUsage): Sample {
  const wallSeconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  return { wall: count / wallSeconds, cpu: count / ((cpu.user + cpu.system) / 1e6) };
}

/** Runs `op` (sync or async) one call at a time for `ms` milliseconds. */
async function timeSequential(op: Op, ms: number): Promise<Sample> {
  const isAsync = op(0) instanceof Promise;
  let count = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const deadline = start + ms;
  while (performance.now() < deadline) {
    if (isAsync) for (let j = 0; j < 50; j++) await op(count++);
    else for (let j = 0; j < 50; j++) op(count++);
  }
  return sample(count, start, cpuStart);
}

/**
 * Keeps `inFlight` calls of `op` in flight for `ms` milliseconds: each of `inFlight` workers starts
 * its next call when its last one settles. Every call started is awaited and counted.
 */
async function timeConcurrent(op: Op, ms: number, inFlight: number): Promise<Sample> {
  let count = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const deadline = start + ms;
  const worker = async () => {
    while (performance.now() < deadline) for (let j = 0; j < 8; j++) await op(count++);
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return sample(count, start, cpuStart);
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

/**
 * Interleaved rounds: each round runs every case once, in rotating order, so CPU frequency changes and
 * neighbours' load hit every case alike. Reported per case: the median round's ops per wall-clock
 * second and per CPU second, and the medians of the per-round ratios to its section's baselines.
 */
async function measureAll(cases: Case[], durationMs: number, rounds: number, inFlight: number) {
  const time = (c: Case, ms: number) =>
    c.section === "sequential" ? timeSequential(c.op, ms) : timeConcurrent(c.op, ms, inFlight);
  for (const c of cases) await time(c, 200);
  const samples = cases.map(() => [] as Sample[]);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < cases.length; k++) {
      const index = (k + round) % cases.length;
      samples[index]?.push(await time(cases[index] as Case, durationMs / rounds));
    }
  }
  const baseline = (section: Section, kind: "sync" | "threadpool") => {
    const index = cases.findIndex((c) => c.section === section && c.baseline === kind);
    return index < 0 ? undefined : samples[index];
  };
  const ratios = (own: Sample[], base: Sample[] | undefined) =>
    base === undefined
      ? undefined
      : {
          wall: median(own.map((s, round) => s.wall / (base[round]?.wall ?? s.wall))),
          cpu: median(own.map((s, round) => s.cpu / (base[round]?.cpu ?? s.cpu))),
        };
  const headToHead = (section: Section, name: string, against: string): HeadToHead => {
    const find = (n: string) => {
      const found = samples[cases.findIndex((c) => c.section === section && c.name === n)];
      if (found === undefined) throw new Error(`benchmark setup: no ${section} case "${n}"`);
      return found;
    };
    const own = find(name);
    const other = find(against);
    const ratio = (key: keyof Sample) =>
      median(own.map((s, round) => s[key] / (other[round]?.[key] ?? Number.NaN)));
    const roundsAhead = own.filter(
      (s, round) => s.wall > (other[round]?.wall ?? Number.POSITIVE_INFINITY),
    ).length;
    return { section, case: name, against, wall: ratio("wall"), cpu: ratio("cpu"), roundsAhead, rounds };
  };
  const rows = cases.map((c, index): BenchRow => {
    const own = samples[index] ?? [];
    const sync = ratios(own, baseline(c.section, "sync"));
    const pool = ratios(own, baseline(c.section, "threadpool"));
    const row: BenchRow = {
      name: c.name,
      section: c.section,
      opsPerSecond: median(own.map((s) => s.wall)),
      opsPerCpuSecond: median(own.map((s) => s.cpu)),
      relative: sync?.cpu ?? Number.NaN,
      relativeWall: sync?.wall ?? Number.NaN,
    };
    if (c.section === "concurrent" && pool !== undefined) {
      row.relativeThreadpool = pool.cpu;
      row.relativeWallThreadpool = pool.wall;
    }
    return row;
  });
  return { rows, headToHead };
}

function assertTrue(condition: boolean, what: string): void {
  if (!condition) throw new Error(`benchmark setup: ${what}`);
}

/** Runs every case once and returns the rows and a markdown table. */
export async function runVerifierBenchmark(
  durationMs = 5000,
  rounds = 10,
  inFlight = 64,
): Promise<VerifierBenchResult> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "bench-key", alg: "ES256", use: "sig" };
  const keyObject: KeyObject = createPublicKey({
    key: jwk as import("node:crypto").JsonWebKey,
    format: "jwk",
  });
  const pem = keyObject.export({ type: "spki", format: "pem" }).toString();
  const now = Math.floor(Date.now() / 1000);
  const tokens: string[] = [];
  for (let i = 0; i < POOL; i++) {
    tokens.push(
      await new SignJWT({
        sub: `user-${i % 50}`,
        client_id: `agent-${i % 20}`,
        scope: "crm:read crm:write",
        jti: `jti-${i}`,
        approval_id: `appr-${i % 100}`,
        authorization_details: [
          { type: "agent_task", approval_id: `appr-${i % 100}`, task: "reconcile invoices" },
        ],
        act: { sub: "spiffe://example.test/agent" },
        rate_limit: { per_second: 1e9, burst: 1e9 },
      })
        .setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid: "bench-key" })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setIssuedAt(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey),
    );
  }
  const token = (i: number) => tokens[i % POOL] as string;

  const revoked = Array.from({ length: 1000 }, (_, i) => ({
    approval_id: `revoked-${i}`,
    revoked_at: new Date().toISOString(),
    cursor: String(i + 1),
  }));
  const feed = createServer((req, res) => {
    const after = new URL(req.url ?? "/", "http://x").searchParams.get("after");
    const page = after === null ? revoked : [];
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ revocations: page, cursor: after ?? "1000" }));
  });
  await new Promise<void>((resolve) => feed.listen(0, "127.0.0.1", resolve));
  const feedUrl = `http://127.0.0.1:${(feed.address() as AddressInfo).port}/revocations`;

  const ours = (cache: boolean, signatureVerification: "threadpool" | "inline") =>
    createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [jwk] },
      revocation: { url: feedUrl, intervalMs: 1000 },
      rateLimit: { perSecond: 1e9, burst: 1e9 },
      cache: cache ? { maxEntries: 10_000 } : false,
      signatureVerification,
    });
  const uncached = ours(false, "threadpool");
  const uncachedInline = ours(false, "inline");
  const cached = ours(true, "threadpool");
  const verifiers = [uncached, uncachedInline, cached];
  await Promise.all(verifiers.map((v) => v.ready()));
  const request = (i: number) => ({
    authorization: `Bearer ${token(i)}`,
    method: "GET",
    url: `${AUDIENCE}/contacts`,
    requiredScopes: ["crm:read"],
  });
  // Every prepared authorization string is built once, like a header a server has already parsed.
  const requests = Array.from({ length: POOL }, (_, i) => request(i));
  type Request = ReturnType<typeof request>;
  for (const v of verifiers) {
    const result = await v.verify(request(0));
    assertTrue(result.ok, `ours refused a valid token: ${result.ok ? "" : result.reason}`);
  }

  const rawOptions = { key: keyObject, dsaEncoding: "ieee-p1363" as const };
  const raw = (t: string) => {
    const dot = t.lastIndexOf(".");
    return cryptoVerify(
      "sha256",
      Buffer.from(t.slice(0, dot), "latin1"),
      rawOptions,
      Buffer.from(t.slice(dot + 1), "base64url"),
    );
  };
  assertTrue(raw(token(0)), "raw verify failed");
  // The same, with crypto.verify's callback form: the verification runs on libuv's thread pool.
  const rawThreadpool = (t: string) =>
    new Promise<boolean>((resolve, reject) => {
      const dot = t.lastIndexOf(".");
      cryptoVerify(
        "sha256",
        Buffer.from(t.slice(0, dot), "latin1"),
        rawOptions,
        Buffer.from(t.slice(dot + 1), "base64url"),
        (error, valid) => (error === null ? resolve(valid) : reject(error)),
      );
    });
  assertTrue(await rawThreadpool(token(0)), "raw verify (thread pool) failed");

  const fastOptions = { key: pem, algorithms: ["ES256" as const], allowedIss: ISSUER, allowedAud: AUDIENCE };
  const fastUncached = createFastJwtVerifier({ ...fastOptions, cache: false });
  const fastCached = createFastJwtVerifier({ ...fastOptions, cache: POOL * 2 });
  fastUncached(token(0));

  const joseOptions = { issuer: ISSUER, audience: AUDIENCE, algorithms: ["ES256"], typ: "at+jwt" };
  await jwtVerify(token(0), keyObject, joseOptions);

  const verifyOurs = (v: typeof cached) => (i: number) => v.verify(requests[i % POOL] as Request);
  const ops = {
    raw: (i: number) => raw(token(i)),
    rawThreadpool: (i: number) => rawThreadpool(token(i)),
    oursThreadpool: verifyOurs(uncached),
    oursInline: verifyOurs(uncachedInline),
    fastUncached: (i: number) => fastUncached(token(i)),
    jose: (i: number) => jwtVerify(token(i), keyObject, joseOptions),
    oursCached: verifyOurs(cached),
    fastCached: (i: number) => fastCached(token(i)),
  };
  const cases: Case[] = [
    { section: "sequential", name: "raw crypto.verify, synchronous", op: ops.raw, baseline: "sync" },
    { section: "sequential", name: "raw crypto.verify, callback (thread pool)", op: ops.rawThreadpool },
    { section: "sequential", name: "ours, uncached, inline", op: ops.oursInline },
    { section: "sequential", name: "ours, uncached, threadpool (default)", op: ops.oursThreadpool },
    { section: "sequential", name: "fast-jwt, uncached", op: ops.fastUncached },
    { section: "sequential", name: "jose.jwtVerify", op: ops.jose },
    { section: "sequential", name: "ours, cached", op: ops.oursCached },
    { section: "sequential", name: "fast-jwt, cached", op: ops.fastCached },
    { section: "concurrent", name: "raw crypto.verify, synchronous", op: ops.raw, baseline: "sync" },
    {
      section: "concurrent",
      name: "raw crypto.verify, callback (thread pool)",
      op: ops.rawThreadpool,
      baseline: "threadpool",
    },
    { section: "concurrent", name: "ours, uncached, threadpool (default)", op: ops.oursThreadpool },
    { section: "concurrent", name: "ours, uncached, inline", op: ops.oursInline },
    { section: "concurrent", name: "fast-jwt, uncached (synchronous)", op: ops.fastUncached },
    { section: "concurrent", name: "jose.jwtVerify (WebCrypto)", op: ops.jose },
    { section: "concurrent", name: "ours, cached", op: ops.oursCached },
    { section: "concurrent", name: "fast-jwt, cached", op: ops.fastCached },
  ];
  const loadBefore = loadavg()[0] ?? 0;
  const { rows, headToHead } = await measureAll(cases, durationMs, rounds, inFlight);
  const pairs: [Section, string, string][] = [
    ["sequential", "ours, uncached, inline", "fast-jwt, uncached"],
    ["sequential", "ours, cached", "fast-jwt, cached"],
    ["concurrent", "ours, uncached, threadpool (default)", "raw crypto.verify, callback (thread pool)"],
    ["concurrent", "ours, uncached, threadpool (default)", "fast-jwt, uncached (synchronous)"],
    ["concurrent", "ours, uncached, inline", "fast-jwt, uncached (synchronous)"],
    ["concurrent", "ours, cached", "fast-jwt, cached"],
  ];
  const compared = pairs.map(([section, name, against]) => headToHead(section, name, against));
  const loadAfter = loadavg()[0] ?? 0;
  for (const v of verifiers) v.close();
  await new Promise<void>((resolve) => feed.close(() => resolve()));

  const format = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const ratio = (value: number | undefined) => (value === undefined ? "" : value.toFixed(2));
  const sequential = rows.filter((r) => r.section === "sequential");
  const concurrent = rows.filter((r) => r.section === "concurrent");
  const pool = process.env.UV_THREADPOOL_SIZE ?? "4 (default)";
  const markdown = [
    `Node ${process.version}, ${cpus()[0]?.model ?? "unknown CPU"} (${cpus().length} cores), UV_THREADPOOL_SIZE ${pool}; ${durationMs} ms per case in ${rounds} interleaved rounds (median round; ratios = median of per-round ratios), ${POOL} distinct tokens. 1-minute load average ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after.`,
    "",
    "Sequential (one verification at a time):",
    "",
    "| case | ops/s (wall) | ops per CPU s | × raw sync (CPU) | × raw sync (wall) |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...sequential.map(
      (r) =>
        `| ${r.name} | ${format.format(r.opsPerSecond)} | ${format.format(r.opsPerCpuSecond)} | ${ratio(r.relative)} | ${ratio(r.relativeWall)} |`,
    ),
    "",
    `Concurrent (${inFlight} verifications in flight):`,
    "",
    "| case | ops/s (wall) | ops per CPU s | × raw sync (wall) | × raw thread pool (wall) | × raw thread pool (CPU) |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...concurrent.map(
      (r) =>
        `| ${r.name} | ${format.format(r.opsPerSecond)} | ${format.format(r.opsPerCpuSecond)} | ${ratio(r.relativeWall)} | ${ratio(r.relativeWallThreadpool)} | ${ratio(r.relativeThreadpool)} |`,
    ),
    "",
    "Head to head, round by round (median of per-round ratios; rounds in which the first had more ops/s):",
    "",
    "| section | case | against | × (wall) | × (CPU) | rounds ahead |",
    "| --- | --- | --- | ---: | ---: | ---: |",
    ...compared.map(
      (h) =>
        `| ${h.section} | ${h.case} | ${h.against} | ${ratio(h.wall)} | ${ratio(h.cpu)} | ${h.roundsAhead}/${h.rounds} |`,
    ),
  ].join("\n");
  return { rows, headToHead: compared, markdown };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const durationMs = Number(process.argv[2] ?? "5000");
  const rounds = Number(process.argv[3] ?? "10");
  const inFlight = Number(process.argv[4] ?? "64");
  const { markdown } = await runVerifierBenchmark(durationMs, rounds, inFlight);
  console.log(markdown);
}
