import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { sql } from "kysely";
import { loadDevIssuer } from "../../sts/src/identity/dev_issuer.js";
import { freePort, TEST_SECRET } from "../helpers/app.js";
import { createTestDatabase } from "../helpers/database.js";
import { insertApproval } from "../helpers/exchange.js";
import { eventually, exchangeOnce, startLoad, tally } from "./load.js";

const onPostgres = { skip: !process.env.DATABASE_URL && "DATABASE_URL not set" };
const root = path.resolve(import.meta.dirname, "../..");

/** Starts `countersign serve` as a child and resolves once it listens (or rejects with its output). */
async function serve(env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(
    path.join(root, "node_modules/.bin/node"),
    [path.join(root, "bin/countersign.js"), "serve"],
    {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  const listening = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the STS did not start: ${output}`)), 90_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("countersign listening")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the STS exited (${code ?? signal}) before listening: ${output}`));
    });
  });
  try {
    await listening;
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  // Keep draining its output so a full pipe never blocks it.
  child.stdout?.resume();
  child.stderr?.resume();
  return child;
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGKILL");
  await exited;
}

/**
 * Fault: the STS process is killed with SIGKILL while exchanges run, then restarted on the same
 * database. Budgets stay exact (tokens_issued = issued_tokens rows for every approval), no approval is
 * lost, every delivered token is recorded, and the restarted STS serves and signs with the same keys.
 */
test(
  "SIGKILL under exchange load, then restart: budgets equal rows, nothing lost, it serves",
  onPostgres,
  async () => {
    const database = await createTestDatabase("postgres");
    const dir = mkdtempSync(path.join(tmpdir(), "countersign-sigkill-"));
    const port = await freePort();
    const issuer = `http://127.0.0.1:${port}`;
    const configFile = path.join(dir, "config.json");
    writeFileSync(
      configFile,
      JSON.stringify({
        issuer,
        resources: [{ id: "https://crm.example.test", scopes: ["crm:read", "crm:write"] }],
        clients: [
          {
            client_id: "billing-agent",
            client_secret: TEST_SECRET,
            token_endpoint_auth_method: "client_secret_basic",
          },
        ],
        issuance_limits: {
          per_client: { per_second: 100000, burst: 100000 },
          per_approval: { per_second: 100000, burst: 100000 },
        },
        dev_mode: true,
      }),
    );
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOST: "127.0.0.1",
      PORT: String(port),
      COUNTERSIGN_CONFIG: configFile,
      COUNTERSIGN_DATA_DIR: dir,
      DATABASE_URL: database.url,
      LOG_LEVEL: "info",
    };
    const children: ChildProcess[] = [];
    const direct = await database.open();
    try {
      children.push(await serve(env));
      const approvals: string[] = [];
      for (let i = 0; i < 6; i++)
        approvals.push(await insertApproval(direct.db, { max_tokens: i < 4 ? 100_000 : 7 }));
      const dev = await loadDevIssuer({ issuer, dataDir: dir });
      const subjectToken = await dev.mint({ sub: "alice", usage: "subject" });

      let phase = "up";
      const load = startLoad({
        url: () => issuer,
        subjectToken,
        approvalIds: approvals,
        workers: 8,
        phase: () => phase,
        maxRequests: 50_000,
      });
      const granted = () => load.answers.filter((a) => a.status === 200).length;
      assert.ok(await eventually(() => granted() >= 60, 900, 100), "no load before the kill");
      const killed = children[0] as ChildProcess;
      await killHard(killed);
      phase = "killed";
      assert.equal(killed.signalCode, "SIGKILL");
      // Requests now fail to connect; let a few of them do so, then stop the load.
      await eventually(() => load.answers.some((a) => a.phase === "killed" && a.status === 0), 100, 50);
      const answers = await load.stop();
      console.log(`sigkill: ${JSON.stringify(tally(answers))}`);
      for (const a of answers) {
        assert.ok(
          a.status === 0 || a.status === 200 || (a.status === 400 && a.error === "invalid_grant"),
          `${a.status} ${a.error}`,
        );
      }

      // The database as the killed process left it.
      const rows = await direct.db.selectFrom("issued_tokens").select(["jti", "approval_id"]).execute();
      const recorded = new Set(rows.map((r) => r.jti));
      for (const a of answers.filter((x) => x.status === 200))
        assert.ok(a.jti && recorded.has(a.jti), `delivered token ${a.jti} has no issued_tokens row`);
      const check = async () => {
        const stored = await sql<{ id: string; tokens_issued: number; max_tokens: number; n: number }>`
        select a.id, a.tokens_issued, a.max_tokens,
          (select count(*)::int from issued_tokens t where t.approval_id = a.id) as n
        from approvals a order by a.id`.execute(direct.db);
        assert.deepEqual(stored.rows.map((r) => r.id).sort(), [...approvals].sort(), "an approval was lost");
        for (const r of stored.rows) {
          assert.equal(r.tokens_issued, r.n, `${r.id}: tokens_issued ${r.tokens_issued} ≠ ${r.n} rows`);
          assert.ok(r.tokens_issued <= r.max_tokens);
        }
        return stored.rows;
      };
      const afterKill = await check();
      console.log(`sigkill: ${rows.length} issued_tokens rows, ${granted()} delivered before the kill`);

      // Restart on the same database and data directory: it serves, with the same signing keys.
      children.push(await serve(env));
      const ready = await fetch(`${issuer}/readyz`);
      assert.equal(ready.status, 200);
      const fresh = await exchangeOnce(issuer, subjectToken, approvals[0] as string, "restarted");
      assert.equal(fresh.status, 200, fresh.error);
      const response = await fetch(`${issuer}/token`, {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${Buffer.from(`billing-agent:${TEST_SECRET}`).toString("base64")}`,
        },
        body: new URLSearchParams({
          grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
          subject_token: subjectToken,
          subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
          resource: "https://crm.example.test",
          authorization_details: JSON.stringify([{ type: "agent_task", approval_id: approvals[1] }]),
        }).toString(),
      });
      assert.equal(response.status, 200);
      const token = ((await response.json()) as { access_token: string }).access_token;
      const jwks = (await (await fetch(`${issuer}/jwks`)).json()) as JSONWebKeySet;
      const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { issuer, typ: "at+jwt" });
      assert.equal(payload.approval_id, approvals[1]);
      const afterRestart = await check();
      const before = new Map(afterKill.map((r) => [r.id, r.tokens_issued]));
      assert.equal(
        afterRestart.find((r) => r.id === approvals[0])?.tokens_issued,
        (before.get(approvals[0] as string) ?? 0) + 1,
      );
    } finally {
      for (const child of children) await killHard(child);
      await direct.close();
      await database.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
