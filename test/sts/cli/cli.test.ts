import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import { developmentDefault, loadConfig } from "../../../sts/src/config/load.js";
import { configFileSchema } from "../../../sts/src/config/schema.js";
import { basicAuth, freePort, postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { countersign, root } from "../../helpers/processes.js";

const CRM = "https://crm.example.test";

/**
 * The characters in `output` that act on a terminal or reorder text (controls, C1, bidi controls,
 * line and paragraph separators), the newlines the CLI writes between lines aside.
 */
function unsafeCharacters(output: string): string[] {
  return [...output.matchAll(/[\p{Cc}\p{Bidi_Control}\u2028\u2029]/gu)]
    .map((match) => match[0])
    .filter((character) => character !== "\n");
}

/** The 1-based line of `.gitignore` that ignores `countersign.json`. */
function gitignoreLine(): number {
  return readFileSync(path.join(root, ".gitignore"), "utf8").split("\n").indexOf("countersign.json") + 1;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

describe("countersign approvals", () => {
  let sts: TestApp;
  let agent: string;
  let alice: string;
  const as = (args: string[]) => countersign([...args, "--url", sts.url, "--token", alice]);

  async function requestApproval(task = "reconcile March invoices"): Promise<ApprovalJson> {
    const response = await fetch(`${sts.url}/approvals`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent}`, "content-type": "application/json" },
      body: JSON.stringify({ resource: CRM, scope: "crm:read crm:write", task, max_tokens: 5 }),
    });
    assert.equal(response.status, 201);
    return (await response.json()) as ApprovalJson;
  }

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    const credential = await postForm(
      `${sts.url}/token`,
      { grant_type: "client_credentials", scope: "approvals:request" },
      { authorization: basicAuth("billing-agent", TEST_SECRET) },
    );
    agent = credential.body.access_token as string;
    const devIssuer = sts.app.services.devIssuer;
    assert.ok(devIssuer);
    alice = await devIssuer.mint({ sub: "alice", usage: "approver" });
  });
  after(() => sts.stop());

  test("list: none pending, then a table, and --json", async () => {
    assert.deepEqual(await as(["approvals", "list"]), {
      code: 0,
      stdout: "no pending approvals\n",
      stderr: "",
    });
    const first = await requestApproval();
    const second = await requestApproval("a task with\nnewlines that is much longer than the table shows it");
    const text = await as(["approvals", "list"]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 3);
    assert.equal(
      lines[0],
      "ID                          STATUS   CLIENT         RESOURCE                  SCOPE               TOKENS  EXPIRES                   TASK",
    );
    // The API's order: each agent's newest first.
    assert.match(lines[1] ?? "", /a task with newlines that is much longer than t…$/);
    assert.match(
      lines[2] ?? "",
      new RegExp(
        `^${first.id}  pending  billing-agent  ${CRM}  crm:read crm:write  0/5 +\\S+ +reconcile March invoices$`,
      ),
    );
    const json = await as(["approvals", "list", "--json"]);
    const page = JSON.parse(json.stdout) as { approvals: ApprovalJson[]; next_cursor: string | null };
    assert.deepEqual(
      page.approvals.map((a) => a.id),
      [second.id, first.id],
    );
    assert.equal(page.next_cursor, null);
    const limited = await as(["approvals", "list", "--limit", "1"]);
    assert.match(limited.stdout, /\nmore: --cursor \S+\n$/);
    const bad = await as(["approvals", "list", "--status", "nope"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Allowed choices are pending, approved, denied, revoked, expired/);
  });

  test("show: details as text and --json; an unknown id is a one-line 404", async () => {
    const approval = await requestApproval();
    const text = await as(["approvals", "show", approval.id]);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(
      text.stdout,
      [
        `id:          ${approval.id}`,
        "status:      pending",
        "client:      billing-agent",
        "task:        reconcile March invoices",
        `resource:    ${CRM}`,
        "scope:       crm:read crm:write",
        "subject:     -",
        "tokens:      0 of 5 issued",
        "rate limit:  -",
        `created:     ${approval.created_at}`,
        `expires:     ${approval.expires_at}`,
        "decided:     -",
        "approved by: -",
        "",
      ].join("\n"),
    );
    const json = await as(["approvals", "show", approval.id, "--json"]);
    assert.deepEqual(JSON.parse(json.stdout), approval);
    const missing = "apr_AAAAAAAAAAAAAAAAAAAAAA";
    assert.deepEqual(await as(["approvals", "show", missing]), {
      code: 1,
      stdout: "",
      stderr: `countersign: no approval ${missing} (404)\n`,
    });
    assert.deepEqual(await as(["approvals", "show", "apr_short"]), {
      code: 1,
      stdout: "",
      stderr: "countersign: no approval apr_short (not an approval id: apr_…)\n",
    });
  });

  test("approve with narrowing; approving again is a one-line 409", async () => {
    const approval = await requestApproval();
    const answer = await as([
      "approvals",
      "approve",
      approval.id,
      "--scope",
      "crm:read",
      "--max-tokens",
      "3",
      "--ttl",
      "600",
      "--rate",
      "2:4",
      "--json",
    ]);
    assert.equal(answer.code, 0, answer.stderr);
    const approved = JSON.parse(answer.stdout) as ApprovalJson;
    assert.equal(approved.status, "approved");
    assert.equal(approved.scope, "crm:read");
    assert.equal(approved.max_tokens, 3);
    assert.deepEqual(approved.rate_limit, { per_second: 2, burst: 4 });
    assert.equal(approved.approved_by, "alice");
    assert.equal(Date.parse(approved.expires_at) - Date.parse(approved.created_at), 600_000);

    const other = await requestApproval();
    const text = await as(["approvals", "approve", other.id]);
    assert.equal(text.code, 0, text.stderr);
    const shown = (await (
      await fetch(`${sts.url}/approvals/${other.id}`, { headers: { authorization: `Bearer ${alice}` } })
    ).json()) as ApprovalJson;
    assert.equal(
      text.stdout,
      `approved ${other.id} for billing-agent: scope "crm:read crm:write", 5 tokens, expires ${shown.expires_at}\n`,
    );
    assert.deepEqual(await as(["approvals", "approve", other.id]), {
      code: 1,
      stdout: "",
      stderr: `countersign: cannot approve ${other.id}: the approval is approved; only a pending approval can be approved (409 invalid_state)\n`,
    });
    const wider = await requestApproval();
    const refused = await as(["approvals", "approve", wider.id, "--max-tokens", "50"]);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /^countersign: cannot approve apr_\S+: max_tokens: .* \(400 invalid_request\)\n$/,
    );
    const badRate = await as(["approvals", "approve", wider.id, "--rate", "fast"]);
    assert.equal(badRate.code, 1);
    assert.match(badRate.stderr, /--rate .*must be PER_SECOND:BURST/);
  });

  test("deny and revoke, with reasons, as text and --json", async () => {
    const pending = await requestApproval();
    assert.deepEqual(await as(["approvals", "deny", pending.id, "--reason", "not this quarter"]), {
      code: 0,
      stdout: `denied ${pending.id}: not this quarter\n`,
      stderr: "",
    });
    const approved = await requestApproval();
    assert.equal((await as(["approvals", "approve", approved.id])).code, 0);
    const revoked = await as(["approvals", "revoke", approved.id, "--reason", "task done", "--json"]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const body = JSON.parse(revoked.stdout) as ApprovalJson;
    assert.equal(body.status, "revoked");
    assert.equal(body.decision_reason, "task done");
    assert.deepEqual(await as(["approvals", "revoke", pending.id]), {
      code: 1,
      stdout: "",
      stderr: `countersign: cannot revoke ${pending.id}: the approval is denied; only an approved approval can be revoked (409 invalid_state)\n`,
    });
  });

  test("an agent's task and subject cannot fake or hide lines: controls and bidi overrides print as escapes", async () => {
    // Erase-line, carriage return, cursor up, a C1 CSI, bell, backspace, bidi overrides and isolates:
    // everything a task needs to rewrite the scope and budget lines an operator is about to approve.
    const task =
      "pay \u202e\u2066invoices\u2069\u202c\x9b1A\x1b[2K\r scope:       crm:read\n\x1b[1A\x1b[2Ktokens:      0 of 1 issued\x07\x08 done";
    const subject = "bob\u202eecila\u202c";
    const created = await fetch(`${sts.url}/approvals`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent}`, "content-type": "application/json" },
      body: JSON.stringify({ resource: CRM, scope: "crm:read crm:write", task, subject, max_tokens: 5 }),
    });
    assert.equal(created.status, 201);
    const approval = (await created.json()) as ApprovalJson;
    assert.equal(approval.task, task);

    const shownTask = String.raw`pay \u202e\u2066invoices\u2069\u202c\x9b1A\x1b[2K\r scope:       crm:read\n\x1b[1A\x1b[2Ktokens:      0 of 1 issued\x07\x08 done`;
    const show = await as(["approvals", "show", approval.id]);
    assert.equal(show.code, 0, show.stderr);
    assert.deepEqual(unsafeCharacters(show.stdout), []);
    assert.equal(
      show.stdout,
      [
        `id:          ${approval.id}`,
        "status:      pending",
        "client:      billing-agent",
        `task:        ${shownTask}`,
        `resource:    ${CRM}`,
        "scope:       crm:read crm:write",
        String.raw`subject:     bob\u202eecila\u202c`,
        "tokens:      0 of 5 issued",
        "rate limit:  -",
        `created:     ${approval.created_at}`,
        `expires:     ${approval.expires_at}`,
        "decided:     -",
        "approved by: -",
        "",
      ].join("\n"),
    );

    const list = await as(["approvals", "list", "--limit", "200"]);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(unsafeCharacters(list.stdout), []);
    const rows = list.stdout.split("\n").filter((line) => line.startsWith(`${approval.id} `));
    assert.equal(rows.length, 1);
    assert.match(
      rows[0] ?? "",
      new RegExp(
        `^${approval.id}  pending  billing-agent  ${CRM}  crm:read crm:write  0/5 +\\S+ +${escapeRegExp(
          String.raw`pay \u202e\u2066invoices\u2069\u202c\x9b1A\x1b[`,
        )}…$`,
      ),
    );

    const json = await as(["approvals", "show", approval.id, "--json"]);
    assert.deepEqual(unsafeCharacters(json.stdout), []);
    assert.deepEqual(JSON.parse(json.stdout), approval);

    // An approver whose name holds a bidi override, and a reason with an escape sequence.
    const carol = await sts.app.services.devIssuer!.mint({
      sub: "carol\u202eetirw\u202c",
      usage: "approver",
    });
    const approved = await countersign([
      "approvals",
      "approve",
      approval.id,
      "--url",
      sts.url,
      "--token",
      carol,
    ]);
    assert.equal(approved.code, 0, approved.stderr);
    const decided = await as(["approvals", "show", approval.id]);
    assert.deepEqual(unsafeCharacters(decided.stdout), []);
    assert.match(decided.stdout, /\napproved by: carol\\u202eetirw\\u202c\n$/);
    const revoked = await as(["approvals", "revoke", approval.id, "--reason", "done\x1b[2K\rall clear"]);
    assert.deepEqual(revoked, {
      code: 0,
      stdout: `revoked ${approval.id}: done\\x1b[2K\\rall clear\n`,
      stderr: "",
    });

    // The STS's own log lines (JSON) carry none of it raw either, yet keep the exact text.
    assert.deepEqual(unsafeCharacters(sts.logs.text), []);
    const logged = sts.logs.lines.find(
      (line) => line.includes('"approval approved"') && line.includes(approval.id),
    );
    assert.ok(logged);
    assert.ok(logged.includes(String.raw`"actor":"carol\u202eetirw\u202c"`), logged);
    assert.equal((JSON.parse(logged) as { actor: string }).actor, "carol\u202eetirw\u202c");
  });

  test("a bad token, an agent token and an unreachable STS are one-line errors", async () => {
    const bad = await countersign(["approvals", "list", "--url", sts.url, "--token", "not-a-jwt"]);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /^countersign: .* \(401 invalid_token\); pass an approver token with --token or COUNTERSIGN_TOKEN \(in dev mode: --as <sub>\)\n$/,
    );
    const asAgent = await countersign(["approvals", "list", "--url", sts.url], { COUNTERSIGN_TOKEN: agent });
    assert.equal(asAgent.code, 1);
    assert.match(asAgent.stderr, /\(403 /);
    const down = `http://127.0.0.1:${await freePort()}`;
    assert.deepEqual(await countersign(["approvals", "list", "--url", down, "--token", alice]), {
      code: 69,
      stdout: "",
      stderr: `countersign: cannot reach ${down}: is \`npm start\` running? (the STS's address: --url or COUNTERSIGN_URL)\n`,
    });
  });

  test("dev mode without a token: a development approver token is minted (--as)", async () => {
    const approval = await requestApproval();
    const answer = await countersign(["approvals", "approve", approval.id, "--as", "carol", "--json"], {
      COUNTERSIGN_URL: sts.url,
      COUNTERSIGN_DATA_DIR: sts.dataDir,
    });
    assert.equal(answer.code, 0, answer.stderr);
    assert.equal((JSON.parse(answer.stdout) as ApprovalJson).approved_by, "carol");
    // Refused outside dev mode.
    const dir = mkdtempSync(path.join(tmpdir(), "countersign-cli-"));
    try {
      writeFileSync(path.join(dir, "config.json"), JSON.stringify({ dev_mode: false }));
      const refused = await countersign(["approvals", "list", "--url", sts.url], {
        COUNTERSIGN_CONFIG: path.join(dir, "config.json"),
        COUNTERSIGN_DATA_DIR: dir,
      });
      assert.equal(refused.code, 1);
      assert.equal(
        refused.stderr,
        `countersign: no approver token: pass --token or set COUNTERSIGN_TOKEN (dev_mode is false in ${path.join(dir, "config.json")}, so no development token is minted)\n`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("countersign clients", () => {
  let dir: string;
  let file: string;

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "countersign-clients-"));
    file = path.join(dir, "countersign.json");
    writeFileSync(
      file,
      `${JSON.stringify({
        resources: [{ id: CRM, scopes: ["crm:read"] }],
        clients: [
          {
            client_id: "billing-agent",
            client_secret: TEST_SECRET,
            token_endpoint_auth_method: "client_secret_basic",
          },
        ],
        dev_mode: true,
      })}\n`,
      { mode: 0o600 },
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("add: a strong secret printed once, the file rewritten valid and atomically", async () => {
    const added = await countersign(
      ["clients", "add", "--id", "triage-agent", "--auth", "client_secret_post"],
      {
        COUNTERSIGN_CONFIG: file,
      },
    );
    assert.equal(added.code, 0, added.stderr);
    const match =
      /^added client triage-agent \(client_secret_post\) to (.+)\nclient_secret: ([A-Za-z0-9_-]{43})\nstore the secret now: it is not shown again\. Restart the STS to load the client\.\n$/.exec(
        added.stdout,
      );
    assert.ok(match, added.stdout);
    assert.equal(match[1], file);
    const written = JSON.parse(readFileSync(file, "utf8")) as { clients: Array<Record<string, unknown>> };
    assert.equal(configFileSchema.safeParse(written).success, true);
    assert.deepEqual(written.clients[1], {
      client_id: "triage-agent",
      token_endpoint_auth_method: "client_secret_post",
      client_secret: match[2],
    });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const duplicate = await countersign(
      ["clients", "add", "--id", "triage-agent", "--auth", "client_secret_basic"],
      {
        COUNTERSIGN_CONFIG: file,
      },
    );
    assert.deepEqual(duplicate, {
      code: 1,
      stdout: "",
      stderr: `countersign: client triage-agent already exists in ${file}\n`,
    });
  });

  test("add private_key_jwt from a JWKS file; a private key is refused and nothing is written", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const publicFile = path.join(dir, "public.json");
    writeFileSync(
      publicFile,
      JSON.stringify({ keys: [{ ...publicKey.export({ format: "jwk" }), kid: "k1" }] }),
    );
    const added = await countersign([
      "clients",
      "add",
      "--id",
      "jwt-agent",
      "--auth",
      "private_key_jwt",
      "--jwks",
      publicFile,
      "--json",
      "--config",
      file,
    ]);
    assert.equal(added.code, 0, added.stderr);
    assert.deepEqual(JSON.parse(added.stdout), {
      client_id: "jwt-agent",
      token_endpoint_auth_method: "private_key_jwt",
      config: file,
      created: false,
    });
    const before = readFileSync(file, "utf8");
    const privateFile = path.join(dir, "private.json");
    writeFileSync(privateFile, JSON.stringify(privateKey.export({ format: "jwk" })));
    const refused = await countersign([
      "clients",
      "add",
      "--id",
      "leaky-agent",
      "--auth",
      "private_key_jwt",
      "--jwks",
      privateFile,
      "--config",
      file,
    ]);
    assert.equal(refused.code, 1);
    assert.equal(
      refused.stderr,
      "countersign: not written: the result would be invalid: clients[3].jwks.keys[0]: must be a public key\n",
    );
    assert.equal(readFileSync(file, "utf8"), before);
    const missing = await countersign([
      "clients",
      "add",
      "--id",
      "x",
      "--auth",
      "private_key_jwt",
      "--config",
      file,
    ]);
    assert.equal(missing.stderr, "countersign: --jwks FILE is required with --auth private_key_jwt\n");
  });

  test("add without a config file: creates one (mode 0600) from the development default, which the STS loads", async () => {
    const created = path.join(dir, "fresh", "countersign.json");
    mkdirSync(path.dirname(created));
    const added = await countersign([
      "clients",
      "add",
      "--id",
      "billing-agent",
      "--auth",
      "client_secret_basic",
      "--config",
      created,
    ]);
    assert.equal(added.code, 0, added.stderr);
    const match = new RegExp(
      `^created ${escapeRegExp(created)} \\(mode 0600\\) from the development default: dev_mode true, resources https://crm\\.example\\.test\n` +
        `added client billing-agent \\(client_secret_basic\\) to ${escapeRegExp(created)}\n` +
        "client_secret: ([A-Za-z0-9_-]{43})\n" +
        `store the secret now: it is not shown again\\. Start the STS with COUNTERSIGN_CONFIG=${escapeRegExp(created)} to load the client\\.\n$`,
    ).exec(added.stdout);
    assert.ok(match, added.stdout);
    assert.equal(statSync(created).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(readFileSync(created, "utf8")), {
      ...(developmentDefault() as object),
      clients: [
        {
          client_id: "billing-agent",
          token_endpoint_auth_method: "client_secret_basic",
          client_secret: match[1],
        },
      ],
    });
    const config = loadConfig({ COUNTERSIGN_CONFIG: created });
    assert.deepEqual(
      config.resources.map((resource) => resource.id),
      [CRM],
    );
    assert.equal(config.dev_mode, true);
    assert.deepEqual(
      config.clients.map((client) => client.client_id),
      ["billing-agent"],
    );
    const json = await countersign([
      "clients",
      "add",
      "--id",
      "json-agent",
      "--auth",
      "client_secret_post",
      "--json",
      "--config",
      path.join(dir, "fresh", "other.json"),
    ]);
    assert.equal(json.code, 0, json.stderr);
    assert.equal((JSON.parse(json.stdout) as { created: unknown }).created, true);
    assert.equal(statSync(path.join(dir, "fresh", "other.json")).mode & 0o777, 0o600);
    const listed = await countersign([
      "clients",
      "list",
      "--config",
      path.join(dir, "fresh", "missing.json"),
    ]);
    assert.deepEqual(listed, {
      code: 78,
      stdout: "",
      stderr: `countersign: ${path.join(dir, "fresh", "missing.json")} does not exist (\`countersign clients add --config ${path.join(dir, "fresh", "missing.json")} …\` creates it)\n`,
    });
  });

  test("the default config path (countersign.json, which holds client secrets) is ignored by git", async () => {
    for (const file of ["countersign.json", "examples/countersign.json"]) {
      const ignored = await new Promise<{ code: number; stdout: string }>((resolve) => {
        execFile("git", ["check-ignore", "--no-index", "--verbose", file], { cwd: root }, (error, stdout) =>
          resolve({ code: error ? Number(error.code) : 0, stdout }),
        );
      });
      assert.deepEqual(ignored, {
        code: 0,
        stdout: `.gitignore:${gitignoreLine()}:countersign.json\t${file}\n`,
      });
    }
  });

  test("list: a table and --json, never a secret; no config file is exit 78", async () => {
    const text = await countersign(["clients", "list", "--config", file]);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(
      text.stdout,
      [
        "CLIENT_ID      AUTH                 KEYS  NAME",
        "billing-agent  client_secret_basic  0     -",
        "triage-agent   client_secret_post   0     -",
        "jwt-agent      private_key_jwt      1     -",
        "",
      ].join("\n"),
    );
    const json = await countersign(["clients", "list", "--json"], { COUNTERSIGN_CONFIG: file });
    const list = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(
      list.map((c) => c.client_id),
      ["billing-agent", "triage-agent", "jwt-agent"],
    );
    assert.doesNotMatch(json.stdout + text.stdout, /secret"|test-secret/);
    assert.deepEqual(await countersign(["clients", "list"]), {
      code: 78,
      stdout: "",
      stderr: "countersign: no config file: pass --config FILE or set COUNTERSIGN_CONFIG\n",
    });
  });
});
