/**
 * Gateway verifier, this tree against a baseline tree, in one process:
 * `npx tsx bench/verifier/compare.ts <baseline index.ts> [durationMs] [rounds] [inFlight]`.
 *
 * For a refactor that must not change performance. Machine load moves absolute figures between two
 * runs of `bench/verifier/index.ts` by far more than a few percent; here both trees are measured in the
 * same interleaved rounds (rotating order), and each case is reported as the median of its per-round
 * ratios (ops per CPU second, current / baseline) with the number of rounds the current tree was ahead.
 * Same tokens and options as index.ts's "ours" (static JWKS, a local revocation feed with 1,000
 * entries, a required scope, a token bucket). A baseline, e.g. from a commit:
 *
 *   mkdir -p scratch/baseline && git archive <commit> gateway-verifier/src | tar -x -C scratch/baseline
 *   npx tsx bench/verifier/compare.ts scratch/baseline/gateway-verifier/src/index.ts 6000 20
 *
 * (`scratch/` is git-ignored; inside the repository the baseline resolves `jose` like the tree does.)
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { createVerifier, type VerifyRequest } from "../../gateway-verifier/src/index.js";

const ISSUER = "http://127.0.0.1:8080";
const AUDIENCE = "https://crm.example.test";
const POOL = 1000;

type Create = typeof createVerifier;
type Sample = { wall: number; cpu: number };
interface Case {
  name: string;
  tree: "baseline" | "current";
  concurrent: boolean;
  op: (i: number) => Promise<unknown>;
}

async function time(c: Case, ms: number, inFlight: number): Promise<Sample> {
  let count = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const deadline = start + ms;
  if (c.concurrent) {
    const worker = async () => {
      while (performance.now() < deadline) for (let j = 0; j < 8; j++) await c.op(count++);
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  } else {
    while (performance.now() < deadline) for (let j = 0; j < 50; j++) await c.op(count++);
  }
  const cpu = process.cpuUsage(cpuStart);
  return { wall: count / ((performance.now() - start) / 1000), cpu: count / ((cpu.user + cpu.system) / 1e6) };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** Measures both trees; returns a markdown table. */
export async function compareVerifiers(
  baseline: Create,
  durationMs = 6000,
  rounds = 20,
  inFlight = 64,
): Promise<string> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: "bench-key", alg: "ES256", use: "sig" };
  const now = Math.floor(Date.now() / 1000);
  const requests: VerifyRequest[] = [];
  for (let i = 0; i < POOL; i++) {
    const token = await new SignJWT({
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
      .sign(privateKey);
    requests.push({
      authorization: `Bearer ${token}`,
      method: "GET",
      url: `${AUDIENCE}/contacts`,
      requiredScopes: ["crm:read"],
    });
  }
  const revoked = Array.from({ length: 1000 }, (_, i) => ({
    approval_id: `revoked-${i}`,
    revoked_at: new Date().toISOString(),
    cursor: String(i + 1),
  }));
  const feed = createServer((req, res) => {
    const after = new URL(req.url ?? "/", "http://x").searchParams.get("after");
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ revocations: after === null ? revoked : [], cursor: after ?? "1000" }));
  });
  await new Promise<void>((resolve) => feed.listen(0, "127.0.0.1", resolve));
  const feedUrl = `http://127.0.0.1:${(feed.address() as AddressInfo).port}/revocations`;

  const cases: Case[] = [];
  const verifiers = [];
  const kinds = [
    ["uncached, inline", false, "inline"],
    ["uncached, threadpool", false, "threadpool"],
    ["cached", true, "threadpool"],
  ] as const;
  for (const [tree, create] of [
    ["baseline", baseline],
    ["current", createVerifier],
  ] as const) {
    for (const [kind, cache, signatureVerification] of kinds) {
      const verifier = create({
        issuer: ISSUER,
        audience: AUDIENCE,
        jwks: { keys: [jwk] },
        revocation: { url: feedUrl, intervalMs: 1000 },
        rateLimit: { perSecond: 1e9, burst: 1e9 },
        cache: cache ? { maxEntries: 10_000 } : false,
        signatureVerification,
      });
      verifiers.push(verifier);
      await verifier.ready();
      const check = await verifier.verify(requests[0] as VerifyRequest);
      if (!check.ok) throw new Error(`benchmark setup: ${tree} refused a valid token: ${check.reason}`);
      for (const concurrent of [false, true]) {
        cases.push({
          name: `${concurrent ? "concurrent" : "sequential"}, ${kind}`,
          tree,
          concurrent,
          op: (i) => verifier.verify(requests[i % POOL] as VerifyRequest),
        });
      }
    }
  }
  for (const c of cases) await time(c, 200, inFlight);
  const samples = cases.map(() => [] as Sample[]);
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < cases.length; k++) {
      const index = (k + round) % cases.length;
      samples[index]?.push(await time(cases[index] as Case, durationMs / rounds, inFlight));
    }
  }
  for (const verifier of verifiers) verifier.close();
  await new Promise<void>((resolve) => feed.close(() => resolve()));

  const format = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const lines = [
    `${durationMs} ms per case in ${rounds} interleaved rounds, ${inFlight} in flight when concurrent, ${POOL} distinct tokens.`,
    "",
    "| case | baseline ops per CPU s | current ops per CPU s | current / baseline (CPU) | rounds current ahead |",
    "| --- | ---: | ---: | ---: | ---: |",
  ];
  cases.forEach((c, index) => {
    if (c.tree !== "baseline") return;
    const other = cases.findIndex((d) => d.tree === "current" && d.name === c.name);
    const base = samples[index] ?? [];
    const current = samples[other] ?? [];
    const ratios = current.map((s, round) => s.cpu / (base[round]?.cpu ?? Number.NaN));
    lines.push(
      `| ${c.name} | ${format.format(median(base.map((s) => s.cpu)))} | ${format.format(median(current.map((s) => s.cpu)))} | ${median(ratios).toFixed(3)} | ${ratios.filter((r) => r > 1).length}/${rounds} |`,
    );
  });
  return lines.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const baselinePath = process.argv[2];
  if (baselinePath === undefined)
    throw new Error("usage: compare.ts <baseline index.ts> [durationMs] [rounds] [inFlight]");
  const baseline = (await import(pathToFileURL(path.resolve(baselinePath)).href)) as {
    createVerifier: Create;
  };
  console.log(
    await compareVerifiers(
      baseline.createVerifier,
      Number(process.argv[3] ?? "6000"),
      Number(process.argv[4] ?? "20"),
      Number(process.argv[5] ?? "64"),
    ),
  );
}
