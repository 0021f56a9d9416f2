import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import type { ApprovalJson } from "../../../sts/src/approvals/model.js";
import { basicAuth, postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";
import { countersign, root } from "../../helpers/processes.js";

const CRM = "https://crm.example.test";

/**
 * The CLI run from a directory that is not the STS's (here a fresh empty one, as `examples/` is): it
 * finds the STS from `--url` / `COUNTERSIGN_URL` (or `HOST`/`PORT`, as `npm start` does) and its
 * development data from `COUNTERSIGN_DATA_DIR`, never from files it guesses or creates where it runs.
 */
describe("countersign from any directory", () => {
  let sts: TestApp;
  let agent: string;
  let elsewhere: string;
  const from = (args: string[], env: Record<string, string> = {}) =>
    countersign(args, env, { cwd: elsewhere });

  async function requestApproval(): Promise<ApprovalJson> {
    const response = await fetch(`${sts.url}/approvals`, {
      method: "POST",
      headers: { authorization: `Bearer ${agent}`, "content-type": "application/json" },
      body: JSON.stringify({ resource: CRM, scope: "crm:read", task: "read the CRM", max_tokens: 2 }),
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
  });
  after(() => sts.stop());

  beforeEach(() => {
    elsewhere = mkdtempSync(path.join(tmpdir(), "countersign-elsewhere-"));
  });
  afterEach(() => {
    // Nothing was created where the CLI ran (no ./.countersign with a guessed key).
    assert.deepEqual(readdirSync(elsewhere), []);
    rmSync(elsewhere, { recursive: true, force: true });
  });

  test("approvals with only COUNTERSIGN_URL: the dev approver token comes from the STS itself", async () => {
    const approval = await requestApproval();
    const listed = await from(["approvals", "list", "--json"], { COUNTERSIGN_URL: sts.url });
    assert.equal(listed.code, 0, listed.stderr);
    assert.ok(
      (JSON.parse(listed.stdout) as { approvals: ApprovalJson[] }).approvals.some(
        (a) => a.id === approval.id,
      ),
    );
    const approved = await from(["approvals", "approve", approval.id, "--as", "carol", "--json"], {
      COUNTERSIGN_URL: sts.url,
    });
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal((JSON.parse(approved.stdout) as ApprovalJson).approved_by, "carol");
    const logged = sts.logs.lines.filter((line) => line.includes('"event":"console.dev_token"'));
    assert.ok(logged.some((line) => line.includes('"sub":"carol"')));
  });

  test("approvals without --url or COUNTERSIGN_URL find the STS from HOST and PORT, as npm start does", async () => {
    const { hostname, port } = new URL(sts.url);
    const listed = await from(["approvals", "list", "--status", "denied"], { HOST: hostname, PORT: port });
    assert.deepEqual(listed, { code: 0, stdout: "no denied approvals\n", stderr: "" });
    const wildcard = await from(["approvals", "list", "--status", "denied"], { HOST: "0.0.0.0", PORT: port });
    assert.deepEqual(wildcard, { code: 0, stdout: "no denied approvals\n", stderr: "" });
    const bad = await from(["approvals", "list"], { PORT: "http" });
    assert.deepEqual(bad, {
      code: 78,
      stdout: "",
      stderr: "countersign: invalid PORT: set --url or COUNTERSIGN_URL instead\n",
    });
  });

  test("dev-token with COUNTERSIGN_URL and COUNTERSIGN_DATA_DIR: a token for that STS, whatever PORT says", async () => {
    const run = await from(["dev-token", "--sub", "dora", "--usage", "approver", "--json"], {
      COUNTERSIGN_URL: sts.url,
      COUNTERSIGN_DATA_DIR: sts.dataDir,
      PORT: "1",
    });
    assert.equal(run.code, 0, run.stderr);
    const minted = JSON.parse(run.stdout) as { token: string; issuer: string; audience: string };
    assert.equal(minted.issuer, `${sts.url}/dev`);
    assert.equal(minted.audience, sts.url);
    const response = await fetch(`${sts.url}/approvals?status=denied`, {
      headers: { authorization: `Bearer ${minted.token}` },
    });
    assert.equal(response.status, 200);
  });

  test("dev-token where the data directory holds no development key: refused, no key created", async () => {
    const run = await from(["dev-token", "--sub", "alice", "--usage", "approver"], {
      COUNTERSIGN_URL: sts.url,
    });
    assert.deepEqual(run, {
      code: 78,
      stdout: "",
      stderr:
        `countersign: no development issuer key in ${path.join(elsewhere, ".countersign")}: set ` +
        "COUNTERSIGN_DATA_DIR to the data directory of the running STS (it creates the key when it starts in dev mode)\n",
    });
    assert.equal(existsSync(path.join(elsewhere, ".countersign")), false);
  });

  test("--version prints the package's version; --help names COUNTERSIGN_URL and COUNTERSIGN_DATA_DIR", async () => {
    const { version } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as {
      version: string;
    };
    assert.deepEqual(await from(["--version"]), { code: 0, stdout: `${version}\n`, stderr: "" });
    const help = await from(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^ {2}COUNTERSIGN_URL {7}the running STS, for approvals and dev-token/m);
    assert.match(help.stdout, /^ {2}COUNTERSIGN_DATA_DIR {2}embedded database and development keys/m);
  });
});

describe("countersign approvals against an STS that is not in dev mode", () => {
  let sts: TestApp;
  before(async () => {
    sts = await startTestApp({
      engine: "pglite",
      env: { COUNTERSIGN_KEK: randomBytes(32).toString("base64url") },
      config: { resources: [{ id: CRM, scopes: ["crm:read"] }], dev_mode: false },
    });
  });
  after(() => sts.stop());

  test("without --token: one line saying to pass one, and no token minted anywhere", async () => {
    const elsewhere = mkdtempSync(path.join(tmpdir(), "countersign-elsewhere-"));
    try {
      const run = await countersign(["approvals", "list"], { COUNTERSIGN_URL: sts.url }, { cwd: elsewhere });
      assert.deepEqual(run, {
        code: 1,
        stdout: "",
        stderr: `countersign: no approver token: the STS at ${sts.url} does not hand out development tokens (it is not in dev mode): pass --token or set COUNTERSIGN_TOKEN\n`,
      });
      assert.deepEqual(readdirSync(elsewhere), []);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});
