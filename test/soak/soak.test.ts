import assert from "node:assert/strict";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { createVerifier } from "../../gateway-verifier/src/index.js";
import { baseConfig, startTestApp } from "../helpers/app.js";
import { testEngines } from "../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";

const LONG = process.env.COUNTERSIGN_LONG_TESTS === "1";
/** Steady-load duration: 60 s in long mode (CI), 5 s otherwise. */
const DURATION_MS = LONG ? 60_000 : 5_000;
const WARMUP_MS = LONG ? 10_000 : 1_500;
const SAMPLE_MS = LONG ? 2_500 : 500;
/** Target rate of exchange + verification pairs per second, spread over the workers. */
const RATE_PER_SECOND = 40;
const WORKERS = 4;
/** Bound on the growth of the live heap (measured after a full GC) over the steady phase. */
const MAX_GROWTH_BYTES = 25 * 1024 * 1024;

// A full collection before each sample, so the series shows live memory rather than garbage not yet
// collected (RSS alone climbs until V8 decides to collect, which is not a leak).
setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;
const CRM = "https://crm.example.test";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Soak: a steady rate of token exchanges, each token verified by a gateway verifier (remote JWKS and
 * the revocation feed), against one STS (real Postgres when available). Zero errors; the live heap
 * (after a full GC), sampled after warm-up, grows less than 25 MB and does not climb monotonically (by
 * more than 5 MB) over the last half of the samples. RSS is printed beside it.
 */
test(`soak: ${DURATION_MS / 1000} s of steady exchanges and verifications, zero errors, flat memory`, async () => {
  const engine = testEngines().at(-1) ?? "pglite";
  const sts = await startTestApp({
    engine,
    config: {
      ...baseConfig(),
      resources: [{ id: CRM, scopes: ["crm:read", "crm:write"] }],
      issuance_limits: {
        per_client: { per_second: 100000, burst: 100000 },
        per_approval: { per_second: 100000, burst: 100000 },
      },
    },
  });
  const verifier = createVerifier({
    issuer: sts.url,
    audience: CRM,
    jwksUri: `${sts.url}/jwks`,
    revocation: { url: `${sts.url}/revocations`, intervalMs: 1000 },
    rateLimit: false,
  });
  try {
    await verifier.ready();
    const approvals = await Promise.all(
      Array.from({ length: WORKERS }, () =>
        insertApproval(sts.handle.db, { max_tokens: 1_000_000, scope: "crm:read" }),
      ),
    );
    const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
    const errors: string[] = [];
    let exchanges = 0;
    let verifications = 0;
    const started = Date.now();
    const deadline = started + DURATION_MS;
    const intervalMs = (1000 * WORKERS) / RATE_PER_SECOND;

    const samples: { atMs: number; heapMb: number; rssMb: number }[] = [];
    const sampler = (async () => {
      await sleep(WARMUP_MS);
      while (Date.now() < deadline) {
        collectGarbage();
        const usage = process.memoryUsage();
        samples.push({
          atMs: Date.now() - started,
          heapMb: usage.heapUsed / 1024 / 1024,
          rssMb: usage.rss / 1024 / 1024,
        });
        await sleep(SAMPLE_MS);
      }
    })();

    await Promise.all(
      approvals.map(async (approvalId) => {
        let next = Date.now();
        while (Date.now() < deadline && errors.length < 10) {
          const answer = await exchange(sts.url, {
            subject_token,
            authorization_details: agentTask(approvalId),
          });
          exchanges += 1;
          if (answer.status !== 200) {
            errors.push(`exchange ${answer.status} ${JSON.stringify(answer.body)}`);
            continue;
          }
          const result = await verifier.verify({
            authorization: `Bearer ${String(answer.body.access_token)}`,
            method: "GET",
            url: `${CRM}/contacts`,
            requiredScopes: ["crm:read"],
          });
          verifications += 1;
          if (!result.ok) errors.push(`verify ${result.status} ${result.reason}`);
          next += intervalMs;
          const wait = next - Date.now();
          if (wait > 0) await sleep(wait);
          else next = Date.now();
        }
      }),
    );
    await sampler;

    const seconds = (Date.now() - started) / 1000;
    const series = samples
      .map((s) => `${(s.atMs / 1000).toFixed(1)}s=${s.heapMb.toFixed(1)}/${s.rssMb.toFixed(0)}MB`)
      .join(" ");
    console.log(
      `soak (${engine}): ${exchanges} exchanges, ${verifications} verifications in ${seconds.toFixed(1)} s ` +
        `(${(exchanges / seconds).toFixed(1)}/s), errors ${errors.length}`,
    );
    console.log(`soak live heap after GC / RSS, after warm-up: ${series}`);
    assert.deepEqual(errors, [], "errors under steady load");
    assert.ok(exchanges > 0 && verifications === exchanges);

    assert.ok(samples.length >= 2, "too few memory samples");
    const heap = samples.map((s) => s.heapMb);
    const growthMb = (heap.at(-1) ?? 0) - (heap[0] ?? 0);
    assert.ok(growthMb * 1024 * 1024 < MAX_GROWTH_BYTES, `live heap grew ${growthMb.toFixed(1)} MB`);
    const lastHalf = heap.slice(Math.floor(heap.length / 2));
    if (lastHalf.length >= 8) {
      // Only the long soak has enough samples past warm-up to tell a steady climb from start-up growth.
      // A leak climbs at every sample; allocator noise of a few MB does not count as one.
      const climbing = lastHalf.every((value, i) => i === 0 || value > (lastHalf[i - 1] ?? 0));
      const climbMb = (lastHalf.at(-1) ?? 0) - (lastHalf[0] ?? 0);
      assert.ok(
        !(climbing && climbMb > 5),
        `live heap climbs ${climbMb.toFixed(1)} MB at every sample of the last half: ${lastHalf.map((v) => v.toFixed(1)).join(", ")}`,
      );
    }
    // Budgets stayed exact under the soak.
    const rows = await sts.handle.db
      .selectFrom("issued_tokens")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow();
    assert.equal(Number(rows.n), exchanges);
  } finally {
    verifier.close();
    await sts.stop();
  }
});
