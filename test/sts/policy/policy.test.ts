import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createApp } from "../../../sts/src/app.js";
import { loadConfig } from "../../../sts/src/config/load.js";
import { createCedarPolicy } from "../../../sts/src/policy/cedar_policy.js";
import {
  checkPolicyFiles,
  formatIssue,
  loadPolicySet,
  PolicyLoadError,
} from "../../../sts/src/policy/load.js";
import { DEFAULT_POLICY_FILE } from "../../../sts/src/policy/schema.js";
import { baseConfig, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { testEngines } from "../../helpers/database.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../../..");
const cli = path.join(root, "bin/countersign.js");
const LEDGER = "https://ledger.example.test";
const PAYROLL = "https://payroll.example.test";

const dir = mkdtempSync(path.join(tmpdir(), "countersign-policy-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a policy file in the test's temporary folder and returns its absolute path. */
function policyFile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

const OFFICE_HOURS = policyFile(
  "office_hours.cedar",
  `// crm:write is for office hours only.
@id("crm-write-office-hours")
@reason("crm:write is only granted Monday to Friday, 09:00-17:00 UTC")
forbid (principal, action == Action::"exchange", resource)
when {
  context.scopes.contains("crm:write") &&
  (context.weekday_utc == 0 || context.weekday_utc == 6 || context.hour_utc < 9 || context.hour_utc >= 17)
};
`,
);

const EXCHANGE_RATE = policyFile(
  "exchange_rate.cedar",
  `@id("agent-exchange-rate")
@reason("more than 3 tokens in the last minute")
forbid (principal is Agent, action == Action::"exchange", resource)
when { context.recent_exchanges_per_minute > 3 };
`,
);

// 5:32 is the ";" where Cedar expects the scope's closing parenthesis.
const MALFORMED = policyFile(
  "malformed.cedar",
  `@id("fine")
permit (principal, action, resource);

// the next one is cut short
@id("broken") forbid (principal;
`,
);

const INVALID = policyFile(
  "invalid.cedar",
  `@id("typo")
forbid (principal, action == Action::"exchange", resource)
when { context.recent_exchange_per_minute > 3 };
`,
);

// Valid against the schema, but multiplying epoch seconds by 10^10 overflows Cedar's 64-bit Long.
const OVERFLOW = policyFile(
  "overflow.cedar",
  `@id("overflowing")
forbid (principal, action, resource)
when { context.now * 10000000000 > 0 };
`,
);

/** The base config plus a finance-tagged ledger and an office-hours-only payroll resource. */
function policyConfig(policies: string[]): Record<string, unknown> {
  const config = baseConfig();
  return {
    ...config,
    resources: [
      ...(config.resources as unknown[]),
      { id: LEDGER, scopes: ["ledger:read", "ledger:write"], tags: { department: "finance" } },
      { id: PAYROLL, scopes: ["payroll:read"], tags: { office_hours_only: "yes" } },
    ],
    clients: [
      ...(config.clients as unknown[]),
      {
        client_id: "rate-agent",
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    policies,
  };
}

// Wednesday 2026-11-25: 22:00 UTC is outside office hours, 10:00 UTC inside.
const WEDNESDAY_NIGHT = new Date("2026-11-25T22:00:00Z");
const WEDNESDAY_MORNING = new Date("2026-11-25T10:00:00Z");
const SATURDAY_MORNING = new Date("2026-11-28T10:00:00Z");

describe("policy files", () => {
  test("the shipped default policy validates against the schema", () => {
    const policySet = loadPolicySet([DEFAULT_POLICY_FILE]);
    assert.deepEqual([...policySet.policies.keys()].sort(), [
      "approver-department",
      "default-permit-approve",
      "default-permit-exchange",
      "office-hours-only",
    ]);
  });

  test("a syntax error names the file, line and column", () => {
    const result = checkPolicyFiles([MALFORMED]);
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.equal(result.issues.length, 1);
    const [issue] = result.issues;
    assert.ok(issue);
    assert.equal(issue.file, MALFORMED);
    assert.equal(issue.line, 5);
    assert.equal(issue.column, 32);
    assert.match(formatIssue(issue), /malformed\.cedar:5:32: syntax error: unexpected token `;`/);
  });

  test("a schema violation names the policy's place and the attribute", () => {
    assert.throws(
      () => loadPolicySet([INVALID]),
      (error: unknown) => {
        assert.ok(error instanceof PolicyLoadError);
        assert.equal(error.issues.length, 1);
        assert.equal(error.issues[0]?.line, 3);
        assert.equal(error.issues[0]?.column, 8);
        assert.match(
          error.message,
          /invalid\.cedar:3:8: for policy `typo`, attribute `recent_exchange_per_minute`/,
        );
        return true;
      },
    );
  });

  test("every policy needs a unique, well-formed, unreserved @id; templates are refused", () => {
    const file = policyFile(
      "ids.cedar",
      `permit (principal, action, resource);
@id("default-permit-exchange") permit (principal, action, resource);
@id("policy_error") permit (principal, action, resource);
@id("has space") permit (principal, action, resource);
@id("templated") permit (principal == ?principal, action, resource);
`,
    );
    const result = checkPolicyFiles([DEFAULT_POLICY_FILE, file]);
    assert.ok(!result.ok);
    assert.deepEqual(
      result.issues.map((issue) => `${path.basename(issue.file)}:${issue.line}: ${issue.message}`),
      [
        "ids.cedar:5: templates (policies with ?principal or ?resource slots) are not supported",
        'ids.cedar:1: policy has no @id("…") annotation; every policy needs a unique id',
        `ids.cedar:2: @id "default-permit-exchange" is already used at ${DEFAULT_POLICY_FILE}:11:1`,
        'ids.cedar:3: @id "policy_error" is reserved',
        'ids.cedar:4: @id "has space" must be 1 to 128 of A-Z a-z 0-9 _ . : - (starting with a letter or digit)',
      ],
    );
  });

  test("a missing file and an empty policy set are issues", () => {
    const missing = path.join(dir, "missing.cedar");
    const result = checkPolicyFiles([missing]);
    assert.ok(!result.ok);
    assert.deepEqual(result.issues.map(formatIssue), [`${missing}: no such file`]);
    const empty = policyFile("empty.cedar", "// nothing yet\n");
    const none = checkPolicyFiles([empty]);
    assert.ok(!none.ok);
    assert.deepEqual(none.issues.map(formatIssue), [
      `${empty}: no policies: every exchange and approval would be refused`,
    ]);
  });

  test("createApp refuses to start on a malformed policy, naming file and place, before opening a database", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-policy-app-"));
    try {
      const config = loadConfig(
        { HOST: "127.0.0.1", PORT: "0", COUNTERSIGN_DATA_DIR: dataDir, LOG_LEVEL: "silent" },
        { ...baseConfig(), policies: [MALFORMED] },
      );
      await assert.rejects(createApp(config), (error: unknown) => {
        assert.ok(error instanceof PolicyLoadError);
        assert.match(
          error.message,
          new RegExp(
            `^invalid Cedar policies:\\n  ${MALFORMED.replace(/[.\\]/g, "\\$&")}:5:32: syntax error: `,
          ),
        );
        return true;
      });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("`countersign serve` exits non-zero on a malformed policy, naming file, line and column", async () => {
    const configFile = path.join(dir, "serve_config.json");
    writeFileSync(configFile, JSON.stringify({ ...baseConfig(), policies: ["./malformed.cedar"] }));
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-policy-serve-"));
    try {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        COUNTERSIGN_CONFIG: configFile,
        PORT: "0",
        COUNTERSIGN_DATA_DIR: dataDir,
      };
      delete env.DATABASE_URL;
      await assert.rejects(
        run(process.execPath, [cli, "serve"], { env, timeout: 60_000 }),
        (error: unknown) => {
          const failure = error as { code: number; stderr: string; stdout: string };
          assert.equal(failure.code, 1);
          assert.match(
            failure.stderr,
            new RegExp(`${MALFORMED.replace(/[.\\]/g, "\\$&")}:5:32: syntax error`),
          );
          assert.doesNotMatch(failure.stdout, /countersign listening/);
          return true;
        },
      );
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("`countersign policy check`: ok and exit 0 for good files", async () => {
    const { stdout } = await run(
      process.execPath,
      [cli, "policy", "check", DEFAULT_POLICY_FILE, OFFICE_HOURS],
      {
        timeout: 60_000,
      },
    );
    assert.equal(
      stdout,
      "ok (5 policies: default-permit-exchange, default-permit-approve, office-hours-only, approver-department, crm-write-office-hours)\n",
    );
  });

  test("`countersign policy check`: each error with its place and exit 1 for bad files", async () => {
    await assert.rejects(
      run(process.execPath, [cli, "policy", "check", MALFORMED, INVALID], { timeout: 60_000 }),
      (error: unknown) => {
        const failure = error as { code: number; stderr: string; stdout: string };
        assert.equal(failure.code, 1);
        assert.equal(failure.stdout, "");
        const lines = failure.stderr.trim().split("\n");
        assert.equal(lines.length, 1, failure.stderr); // validation waits for every file to parse
        assert.match(lines[0] ?? "", /malformed\.cedar:5:32: syntax error: unexpected token `;`/);
        return true;
      },
    );
    await assert.rejects(
      run(process.execPath, [cli, "policy", "check", INVALID], { timeout: 60_000 }),
      (error: unknown) => {
        const failure = error as { code: number; stderr: string };
        assert.equal(failure.code, 1);
        assert.match(
          failure.stderr,
          /invalid\.cedar:3:8: for policy `typo`, attribute `recent_exchange_per_minute` in context for Action::"exchange" not found/,
        );
        return true;
      },
    );
  });
});

for (const engine of testEngines()) {
  describe(`Cedar policies on ${engine}`, () => {
    describe("office hours, departments and the default policy", () => {
      let sts: TestApp;
      let now = WEDNESDAY_NIGHT;

      before(async () => {
        sts = await startTestApp({
          engine,
          config: policyConfig([DEFAULT_POLICY_FILE, OFFICE_HOURS]),
          appOptions: { policyClock: () => now },
        });
      });
      after(() => sts.stop());

      const mint = (sub: string, usage: "subject" | "approver", extraClaims: Record<string, unknown> = {}) =>
        sts.app.services.devIssuer!.mint({ sub, usage, extraClaims });

      async function exchangeFor(scope: string, resource = "https://crm.example.test") {
        const approvalId = await insertApproval(sts.handle.db, {
          resource,
          scope: resource === PAYROLL ? "payroll:read" : "crm:read crm:write",
        });
        return exchange(sts.url, {
          subject_token: await mint("alice", "subject"),
          resource,
          scope,
          authorization_details: agentTask(approvalId),
        });
      }

      async function approve(approvalId: string, token: string) {
        const response = await fetch(`${sts.url}/approvals/${approvalId}/approve`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: "{}",
        });
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      }

      test("crm:write outside office hours: invalid_grant naming the policy and its reason", async () => {
        now = WEDNESDAY_NIGHT;
        const answer = await exchangeFor("crm:write");
        assert.equal(answer.status, 400);
        assert.deepEqual(answer.body, {
          error: "invalid_grant",
          error_description:
            "forbidden by policy crm-write-office-hours: crm:write is only granted Monday to Friday, 09:00-17:00 UTC",
        });
        now = SATURDAY_MORNING;
        assert.equal((await exchangeFor("crm:write")).status, 400);
      });

      test("crm:write inside office hours, and crm:read at any hour: 200", async () => {
        now = WEDNESDAY_MORNING;
        const write = await exchangeFor("crm:write");
        assert.equal(write.status, 200, JSON.stringify(write.body));
        assert.equal(write.body.scope, "crm:write");
        now = WEDNESDAY_NIGHT;
        const read = await exchangeFor("crm:read");
        assert.equal(read.status, 200, JSON.stringify(read.body));
      });

      test("the refusal is audited with reason policy_denied", async () => {
        now = WEDNESDAY_NIGHT;
        await exchangeFor("crm:write");
        const row = await sts.handle.db
          .selectFrom("audit_events")
          .select(["outcome", "reason", "detail"])
          .where("event", "=", "token_exchange")
          .where("outcome", "=", "refused")
          .orderBy("id", "desc")
          .limit(1)
          .executeTakeFirstOrThrow();
        assert.equal(row.reason, "policy_denied");
        assert.match(String(row.detail?.description), /^forbidden by policy crm-write-office-hours: /);
      });

      test("default policy: a resource tagged office_hours_only gets tokens on weekdays 08-18 UTC only", async () => {
        now = SATURDAY_MORNING;
        const weekend = await exchangeFor("payroll:read", PAYROLL);
        assert.equal(weekend.status, 400);
        assert.deepEqual(weekend.body, {
          error: "invalid_grant",
          error_description:
            "forbidden by policy office-hours-only: this resource only gets tokens Monday to Friday, 08:00-18:00 UTC",
        });
        now = WEDNESDAY_MORNING;
        assert.equal((await exchangeFor("payroll:read", PAYROLL)).status, 200);
      });

      test("an approver granting beyond their department: 403 naming the policy; the department's approver may", async () => {
        const approvalId = await insertApproval(sts.handle.db, {
          status: "pending",
          resource: LEDGER,
          scope: "ledger:read",
        });
        const sales = await approve(approvalId, await mint("carol", "approver", { department: "sales" }));
        assert.equal(sales.status, 403);
        assert.deepEqual(sales.body, {
          error: "access_denied",
          error_description:
            "policy approver-department forbids this approval: only an approver of the resource's department may decide access to it",
        });
        const none = await approve(approvalId, await mint("erin", "approver"));
        assert.equal(none.status, 403);
        assert.match(
          String(none.body.error_description),
          /^policy approver-department forbids this approval/,
        );

        const finance = await approve(approvalId, await mint("dave", "approver", { department: "finance" }));
        assert.equal(finance.status, 200, JSON.stringify(finance.body));
        assert.equal(finance.body.status, "approved");
        assert.equal(finance.body.approved_by, "dave");
      });

      test("an untagged resource: any approver may approve (the default policy changes nothing)", async () => {
        const approvalId = await insertApproval(sts.handle.db, { status: "pending" });
        const answer = await approve(approvalId, await mint("carol", "approver", { department: "sales" }));
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
      });
    });

    describe("an agent over its exchange rate", () => {
      let sts: TestApp;
      before(async () => {
        sts = await startTestApp({ engine, config: policyConfig([DEFAULT_POLICY_FILE, EXCHANGE_RATE]) });
      });
      after(() => sts.stop());

      test("four exchanges in a row pass, the fifth is refused naming the policy; another agent is unaffected", async () => {
        const rateAgent = { id: "rate-agent", secret: TEST_SECRET };
        const approvalId = await insertApproval(sts.handle.db, { client_id: "rate-agent", max_tokens: 20 });
        const subjectToken = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
        const params = {
          subject_token: subjectToken,
          scope: "crm:read",
          authorization_details: agentTask(approvalId),
        };
        for (let i = 1; i <= 4; i++) {
          const answer = await exchange(sts.url, params, rateAgent);
          assert.equal(answer.status, 200, `exchange ${i}: ${JSON.stringify(answer.body)}`);
        }
        const fifth = await exchange(sts.url, params, rateAgent);
        assert.equal(fifth.status, 400);
        assert.deepEqual(fifth.body, {
          error: "invalid_grant",
          error_description: "forbidden by policy agent-exchange-rate: more than 3 tokens in the last minute",
        });
        const budget = await sts.handle.db
          .selectFrom("approvals")
          .select("tokens_issued")
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        assert.equal(budget.tokens_issued, 4);

        const other = await insertApproval(sts.handle.db, { client_id: "billing-agent" });
        const answer = await exchange(sts.url, { ...params, authorization_details: agentTask(other) });
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
      });
    });

    describe("fail closed", () => {
      let sts: TestApp;
      before(async () => {
        sts = await startTestApp({ engine, config: policyConfig([DEFAULT_POLICY_FILE, OVERFLOW]) });
      });
      after(() => sts.stop());

      test("an evaluation error refuses the exchange with policy_error, although a permit matched", async () => {
        const approvalId = await insertApproval(sts.handle.db);
        const answer = await exchange(sts.url, {
          subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
          scope: "crm:read",
          authorization_details: agentTask(approvalId),
        });
        assert.equal(answer.status, 400);
        assert.deepEqual(answer.body, {
          error: "invalid_grant",
          error_description:
            "forbidden by policy policy_error: policy overflowing could not be evaluated; refused (fail closed)",
        });
        assert.match(sts.logs.text, /policy evaluation failed: refusing \(fail closed\)/);
        assert.match(sts.logs.text, /integer overflow/);
      });

      test("an evaluation error refuses the approval too", async () => {
        const approvalId = await insertApproval(sts.handle.db, { status: "pending" });
        const token = await sts.app.services.devIssuer!.mint({ sub: "dave", usage: "approver" });
        const response = await fetch(`${sts.url}/approvals/${approvalId}/approve`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: "{}",
        });
        assert.equal(response.status, 403);
        assert.deepEqual(await response.json(), {
          error: "access_denied",
          error_description:
            "policy policy_error forbids this approval: policy overflowing could not be evaluated; refused (fail closed)",
        });
      });

      test("no matching permit is Cedar's default deny, named default_deny", async () => {
        const policy = createCedarPolicy({
          policySet: loadPolicySet([OFFICE_HOURS]),
          db: sts.handle.db,
          resources: sts.config.resources,
          logger: sts.app.logger,
        });
        const approvalId = await insertApproval(sts.handle.db);
        const approval = await sts.handle.db
          .selectFrom("approvals")
          .selectAll()
          .where("id", "=", approvalId)
          .executeTakeFirstOrThrow();
        const decision = await policy.authorizeExchange({
          clientId: "billing-agent",
          subject: {
            sub: "alice",
            issuer: "https://idp.example.test",
            act: undefined,
            bounds: undefined,
            issuedAt: undefined,
          },
          actor: undefined,
          approval,
          resource: "https://crm.example.test",
          scopes: ["crm:read"],
          ttlSeconds: 300,
          now: WEDNESDAY_MORNING,
        });
        assert.deepEqual(decision, {
          allowed: false,
          policyId: "default_deny",
          reason: "no policy permits this token exchange",
        });
      });
    });
  });
}
