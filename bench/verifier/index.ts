/**
 * Gateway verifier benchmark: `npx tsx bench/verifier/index.ts [durationMs]`.
 *
 * One process, one core, sequential calls. Every case verifies the same pool of distinct ES256
 * access tokens (so "uncached" really is uncached). "ours" runs with every check on: static JWKS,
 * iss/aud/typ/exp/nbf/iat/max age, approval_id, act depth, revocation set (polled from a local feed
 * holding 1,000 revoked approvals), a required scope and a per-(client, approval) token bucket.
 */
import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { cpus } from "node:os";
import { createVerifier as createFastJwtVerifier } from "fast-jwt";
import { exportJWK, generateKeyPair, jwtVerify, SignJWT } from "jose";
import { createVerifier } from "../../gateway-verifier/src/index.js";

const ISSUER = "http://127.0.0.1:8080";
const AUDIENCE = "https://crm.example.test";
const POOL = 1000;

export interface BenchRow {
  name: string;
  /** Median round, operations per wall-clock second. */
  opsPerSecond: number;
  /** Median round, operations per CPU second of the process. */
  opsPerCpuSecond: number;
  /** Median over rounds of the wall-clock ratio to raw crypto.verify. */
  relativeWall: number;
  /** Median over rounds of (ops per CPU second ÷ raw node:crypto ES256 verify's, same round). */
  relative: number;
}

export interface VerifierBenchResult {
  rows: BenchRow[];
  markdown: string;
}

type Op = (i: number) => unknown;

interface Sample {
  /** Operations per wall-clock second. */
  wall: number;
  /** Operations per second of CPU time used by the process (user + system, all threads). */
  cpu: number;
}

/** Runs `op` (sync or async) for `ms` milliseconds. */
async function timeFor(op: Op, ms: number): Promise<Sample> {
  const isAsync = op(0) instanceof Promise;
  let count = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const deadline = start + ms;
  while (performance.now() < deadline) {
    if (isAsync) for (let j = 0; j < 50; j++) await op(count++);
    else for (let j = 0; j < 50; j++) op(count++);
  }
  const wallSeconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  return { wall: count / wallSeconds, cpu: count / ((cpu.user + cpu.system) / 1e6) };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

/**
 * Interleaved rounds: each round runs every case once, in rotating order, so CPU frequency changes and
 * neighbours' load hit every case alike. Reported per case: the median round's ops per wall-clock
 * second and per CPU second, and the median of the per-round ratios to the first case, computed on CPU
 * time (time the process was not scheduled, on a shared machine, is not charged to any case).
 */
async function measureAll(cases: [string, Op][], durationMs: number, rounds: number) {
  for (const [, op] of cases) await timeFor(op, 200);
  const samples = cases.map(() => [] as Sample[]);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < cases.length; k++) {
      const index = (k + round) % cases.length;
      samples[index]?.push(await timeFor((cases[index] as [string, Op])[1], durationMs / rounds));
    }
  }
  const base = samples[0] ?? [];
  return cases.map(([name], index) => {
    const own = samples[index] ?? [];
    return {
      name,
      opsPerSecond: median(own.map((s) => s.wall)),
      opsPerCpuSecond: median(own.map((s) => s.cpu)),
      relative: median(own.map((s, round) => s.cpu / (base[round]?.cpu ?? s.cpu))),
      relativeWall: median(own.map((s, round) => s.wall / (base[round]?.wall ?? s.wall))),
    };
  });
}

function assertTrue(condition: boolean, what: string): void {
  if (!condition) throw new Error(`benchmark setup: ${what}`);
}

/** Runs every case once and returns the rows and a markdown table. */
export async function runVerifierBenchmark(durationMs = 5000, rounds = 10): Promise<VerifierBenchResult> {
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

  const ours = (cache: boolean) =>
    createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [jwk] },
      revocation: { url: feedUrl, intervalMs: 1000 },
      rateLimit: { perSecond: 1e9, burst: 1e9 },
      cache: cache ? { maxEntries: 10_000 } : false,
    });
  const uncached = ours(false);
  const cached = ours(true);
  await Promise.all([uncached.ready(), cached.ready()]);
  const request = (i: number) => ({
    authorization: `Bearer ${token(i)}`,
    method: "GET",
    url: `${AUDIENCE}/contacts`,
    requiredScopes: ["crm:read"],
  });
  // Every prepared authorization string is built once, like a header a server has already parsed.
  const requests = Array.from({ length: POOL }, (_, i) => request(i));
  type Request = ReturnType<typeof request>;
  for (const v of [uncached, cached]) {
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

  const fastOptions = { key: pem, algorithms: ["ES256" as const], allowedIss: ISSUER, allowedAud: AUDIENCE };
  const fastUncached = createFastJwtVerifier({ ...fastOptions, cache: false });
  const fastCached = createFastJwtVerifier({ ...fastOptions, cache: POOL * 2 });
  fastUncached(token(0));

  const joseOptions = { issuer: ISSUER, audience: AUDIENCE, algorithms: ["ES256"], typ: "at+jwt" };
  await jwtVerify(token(0), keyObject, joseOptions);

  const measured = await measureAll(
    [
      ["raw node:crypto ES256 verify", (i) => raw(token(i))],
      ["countersign verifier, uncached (all checks)", (i) => uncached.verify(requests[i % POOL] as Request)],
      ["fast-jwt, uncached", (i) => fastUncached(token(i))],
      ["jose.jwtVerify", (i) => jwtVerify(token(i), keyObject, joseOptions)],
      ["countersign verifier, cached (all checks)", (i) => cached.verify(requests[i % POOL] as Request)],
      ["fast-jwt, cached", (i) => fastCached(token(i))],
    ],
    durationMs,
    rounds,
  );
  uncached.close();
  cached.close();
  await new Promise<void>((resolve) => feed.close(() => resolve()));

  const rows: BenchRow[] = measured;
  const format = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const markdown = [
    `Node ${process.version}, ${cpus()[0]?.model ?? "unknown CPU"} (${cpus().length} cores), ${durationMs} ms per case in ${rounds} interleaved rounds (median round; ratios = median of per-round ratios), ${POOL} distinct tokens.`,
    "",
    "| case | ops/s (wall) | ops per CPU s | × raw crypto.verify (CPU) | × raw (wall) |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${format.format(r.opsPerSecond)} | ${format.format(r.opsPerCpuSecond)} | ${r.relative.toFixed(2)} | ${r.relativeWall.toFixed(2)} |`,
    ),
  ].join("\n");
  return { rows, markdown };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const durationMs = Number(process.argv[2] ?? "5000");
  const rounds = Number(process.argv[3] ?? "10");
  const { markdown } = await runVerifierBenchmark(durationMs, rounds);
  console.log(markdown);
}
