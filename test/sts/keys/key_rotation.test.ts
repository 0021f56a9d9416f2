import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { baseConfig, basicAuth, postForm, startTestApp, TEST_SECRET } from "../../helpers/app.js";
import { createTestDatabase, testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../../..");

async function publishedKids(url: string): Promise<string[]> {
  const jwks = (await (await fetch(`${url}/jwks`)).json()) as { keys: { kid: string }[] };
  return jwks.keys.map((key) => key.kid);
}

for (const engine of testEngines()) {
  describe(`signing-key rotation on ${engine}`, () => {
    test("steady exchanges and verifications across two rotations: zero failures; JWKS shows next, current, previous", async () => {
      // Issuance limits out of the way: this test is about keys, not rate.
      const unlimited = { per_second: 100_000, burst: 100_000 };
      const sts = await startTestApp({
        engine,
        config: { ...baseConfig(), issuance_limits: { per_client: unlimited, per_approval: unlimited } },
      });
      try {
        const approvalId = await insertApproval(sts.handle.db, { max_tokens: 10_000 });
        const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        // A gateway-style verifier whose JWKS cache lives shorter than the rotation interval (as in
        // production: minutes against days), and whose refetch-on-unknown-kid is held back by a long
        // cooldown: zero failures then shows that announcing the next key ahead of time is what works.
        const jwks = createRemoteJWKSet(new URL(`${sts.url}/jwks`), {
          cacheMaxAge: 300,
          cooldownDuration: 60_000,
        });
        const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
        const before = await publishedKids(sts.url);
        assert.equal(before.length, 2);
        const [firstCurrent, firstNext] = before;

        let stop = false;
        const failures: string[] = [];
        const kidsSeen = new Set<string>();
        let verified = 0;
        const tokens: string[] = [];
        const load = (async () => {
          while (!stop) {
            const minted = await exchange(sts.url, {
              subject_token,
              authorization_details: agentTask(approvalId),
            });
            if (minted.status !== 200) {
              failures.push(`exchange ${minted.status} ${JSON.stringify(minted.body)}`);
              continue;
            }
            const token = minted.body.access_token as string;
            tokens.push(token);
            try {
              const { protectedHeader } = await jwtVerify(token, jwks, {
                issuer: sts.url,
                audience: "https://crm.example.test",
              });
              kidsSeen.add(protectedHeader.kid as string);
              verified++;
            } catch (error) {
              failures.push(`verify ${(error as Error).message}`);
            }
          }
        })();

        const waitFor = async (count: number) => {
          const target = verified + count;
          // Bounded (20 s) for the run: on a loaded machine each exchange and verification may take a
          // few hundred milliseconds, and a shorter wait ended before its tokens (verified >= 30 below).
          for (let i = 0; i < 2000 && verified < target && failures.length === 0; i++) {
            await new Promise((resolve) => setTimeout(resolve, 10));
          }
        };
        await waitFor(10);
        const first = await sts.app.rotateKeys();
        assert.equal(first?.current, firstNext);
        assert.equal(first?.previous, firstCurrent);
        await waitFor(10);
        await pause(400); // longer than the verifier's cache age: the interval between rotations
        await waitFor(5);
        const second = await sts.app.rotateKeys();
        await waitFor(10);
        stop = true;
        await load;

        assert.deepEqual(failures, []);
        assert.ok(verified >= 30, `verified ${verified}`);
        assert.deepEqual(
          [...kidsSeen].sort(),
          [firstCurrent, first?.current, second?.current].sort(),
          "tokens were signed by each key in turn",
        );
        const after = await publishedKids(sts.url);
        assert.deepEqual(
          after.slice().sort(),
          [second!.current, second!.next, first!.current, firstCurrent!].sort(),
        );
        assert.equal(after[0], second?.current);
        assert.ok(after.includes(second!.next), "the next key is announced");
        assert.ok(after.includes(firstNext!), "the previous key stays published");
        // Tokens signed before the rotations still verify.
        for (const token of [tokens[0]!, tokens.at(-1)!]) {
          await jwtVerify(token, createRemoteJWKSet(new URL(`${sts.url}/jwks`)), { issuer: sts.url });
        }
        // client_credentials follows the rotation too.
        const cc = await postForm(
          `${sts.url}/token`,
          { grant_type: "client_credentials" },
          { authorization: basicAuth("billing-agent", TEST_SECRET) },
        );
        assert.equal(decodeProtectedHeader(cc.body.access_token as string).kid, second?.current);
      } finally {
        await sts.stop();
      }
    });
  });
}

describe("rotation across instances and from the CLI", () => {
  test("countersign keys rotate on real Postgres; a second instance picks the new key up on its own", {
    skip: !process.env.DATABASE_URL && "DATABASE_URL not set",
  }, async () => {
    const database = await createTestDatabase("postgres");
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-rotate-"));
    const config = {
      ...baseConfig(),
      issuer: "http://127.0.0.1:8080",
      keys: { refresh_interval_seconds: 0.2 },
    };
    try {
      const [a, b] = await Promise.all([
        startTestApp({ engine: "postgres", database, dataDir, config }),
        startTestApp({ engine: "postgres", database, dataDir, config }),
      ]);
      try {
        const before = await publishedKids(a.url);
        const env = { ...process.env, DATABASE_URL: database.url, COUNTERSIGN_DATA_DIR: dataDir };
        const { stdout } = await run(
          process.execPath,
          [path.join(root, "bin/countersign.js"), "keys", "rotate", "--json"],
          {
            env,
            timeout: 30_000,
          },
        );
        const result = JSON.parse(stdout) as { current: string; next: string; previous: string };
        assert.equal(result.current, before[1]);
        assert.equal(result.previous, before[0]);
        let kidsB: string[] = [];
        for (let i = 0; i < 50; i++) {
          kidsB = await publishedKids(b.url);
          if (kidsB[0] === result.current) break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        assert.deepEqual(kidsB.slice().sort(), [result.current, result.next, result.previous].sort());
        assert.equal(kidsB[0], result.current);
        const approvalId = await insertApproval(b.handle.db);
        const minted = await exchange(b.url, {
          subject_token: await b.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
          authorization_details: agentTask(approvalId),
        });
        assert.equal(decodeProtectedHeader(minted.body.access_token as string).kid, result.current);
        const listed = await run(
          process.execPath,
          [path.join(root, "bin/countersign.js"), "keys", "list", "--json"],
          { env, timeout: 30_000 },
        );
        const keys = (JSON.parse(listed.stdout) as { keys: { kid: string; status: string }[] }).keys;
        assert.deepEqual(Object.fromEntries(keys.map((key) => [key.kid, key.status])), {
          [result.current]: "current",
          [result.next]: "next",
          [result.previous]: "previous",
        });
        assert.doesNotMatch(listed.stdout, /private|"d"/);
      } finally {
        await Promise.all([a.stop(), b.stop()]);
      }
    } finally {
      await database.dispose();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
