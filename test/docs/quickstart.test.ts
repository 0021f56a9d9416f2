import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { freePort } from "../helpers/app.js";
import { root } from "../helpers/processes.js";

/**
 * The README's quick start, run as written: every fenced block marked ```sh title="quickstart"``` runs
 * in bash (`set -euo pipefail`), in order, in one fresh directory laid out like a clone; a block marked
 * ```sh title="quickstart server"``` is a long-running command started in the background (the
 * README's "leave it running" terminals) that must print a line containing "listening".
 *
 * What the harness changes, and why:
 * - `npm install` (the first line) is not run: this checkout is installed, and `dist/` must be built.
 * - `npx countersign …` and `npx tsx …` run the very files npx would (`bin/countersign.js`,
 *   `node_modules/.bin/tsx`): on first use npx installs the project into npm's cache, running its build,
 *   which a test must not do.
 * - Ports: `127.0.0.1:8080` and `127.0.0.1:3000` in the commands become free ports, which `PORT`,
 *   `COUNTERSIGN_URL` and `CRM_API_PORT` hand to the STS, the CLI and the example API.
 * A `# → text` line after a command is that command's output: a block holding such lines must print
 * exactly them.
 */

/** What the quick start uses of a clone (symlinked into the test's directory). */
const CLONE_ENTRIES = [
  "package.json",
  "bin",
  "dist",
  "examples",
  "gateway-verifier",
  "migrations",
  "node_modules",
  "policies",
  "sts",
  "tsconfig.json",
];

interface Block {
  kind: "quickstart" | "quickstart server";
  script: string;
}

/** The quick-start blocks of the README, in order. */
function quickstartBlocks(readme: string): Block[] {
  return [...readme.matchAll(/^```sh title="(quickstart(?: server)?)"\n([\s\S]*?)^```$/gm)].map((m) => ({
    kind: m[1] as Block["kind"],
    script: m[2] ?? "",
  }));
}

/** The shell variables a block assigns (`NAME=…` at the start of a line), carried to later blocks. */
function assignedVariables(script: string): string[] {
  return [...script.matchAll(/^([A-Za-z_][A-Za-z0-9_]*)=/gm)].map((m) => m[1] ?? "");
}

/** The output a block documents with `# → ` lines. */
function documentedOutput(script: string): string {
  return [...script.matchAll(/^# → (.*)$/gm)].map((m) => `${m[1]}\n`).join("");
}

/**
 * Resolves once `child` prints a line containing "listening"; rejects (with its output) when it exits
 * first or after `timeoutMs`.
 */
function untilListening(child: ChildProcess, what: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = "";
    const done = (error?: Error) => {
      clearTimeout(timer);
      child.off("exit", onExit);
      if (error) reject(error);
      else resolve();
    };
    const onExit = (code: number | null) =>
      done(new Error(`${what} exited (${code}) before listening:\n${output}`));
    const timer = setTimeout(
      () => done(new Error(`${what}: not listening within ${timeoutMs} ms:\n${output}`)),
      timeoutMs,
    );
    child.once("exit", onExit);
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stdout?.on("data", (chunk: Buffer) => {
      const before = output;
      output += chunk.toString();
      if (!/listening/.test(before) && /listening/.test(output)) done();
    });
  });
}

/** Stops `child`'s process group (SIGTERM; SIGKILL after `graceMs`) and waits for `child` to exit. */
async function stopGroup(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

test("README quick start: from a fresh directory to an API call through the gateway verifier", {
  timeout: 600_000,
  skip: process.platform === "win32" && "bash and process groups",
}, async () => {
  assert.ok(
    existsSync(path.join(root, "dist/sts/src/cli.js")),
    "dist/ is not built: `npm run build` (npm install runs it)",
  );
  const readme = readFileSync(path.join(root, "README.md"), "utf8");
  const blocks = quickstartBlocks(readme);
  assert.deepEqual(
    blocks.map((block) => block.kind),
    ["quickstart", "quickstart server", "quickstart", "quickstart", "quickstart server", "quickstart"],
  );
  assert.equal(blocks[0]?.script.split("\n")[0], "npm install");

  const dir = mkdtempSync(path.join(tmpdir(), "countersign-quickstart-"));
  // A clone's layout, without anything a previous run left (countersign.json, .countersign).
  for (const entry of CLONE_ENTRIES) symlinkSync(path.join(root, entry), path.join(dir, entry));
  const stsPort = await freePort();
  const apiPort = await freePort();
  const {
    DATABASE_URL: _db,
    COUNTERSIGN_CONFIG: _config,
    COUNTERSIGN_TOKEN: _token,
    COUNTERSIGN_DATA_DIR: _dataDir,
    HOST: _host,
    ...inherited
  } = process.env;
  const env = {
    ...inherited,
    PATH: `${path.join(root, "node_modules/.bin")}${path.delimiter}${process.env.PATH ?? ""}`,
    PORT: String(stsPort),
    COUNTERSIGN_URL: `http://127.0.0.1:${stsPort}`,
    CRM_API_PORT: String(apiPort),
    LOG_LEVEL: "info",
    npm_config_cache: path.join(dir, ".npm-cache"),
    npm_config_offline: "true",
    npm_config_update_notifier: "false",
  };
  const prelude = [
    "set -euo pipefail",
    `npx() { case "$1" in countersign) shift; node ${JSON.stringify(path.join(root, "bin/countersign.js"))} "$@";;`,
    `  tsx) shift; ${JSON.stringify(path.join(root, "node_modules/.bin/tsx"))} "$@";;`,
    '  *) echo "the quick start runs no other npx command: $1" >&2; return 127;; esac; }',
    "[ -f .quickstart-state ] && source .quickstart-state",
    "",
  ].join("\n");
  const localize = (script: string) =>
    script
      .replaceAll("127.0.0.1:8080", `127.0.0.1:${stsPort}`)
      .replaceAll("127.0.0.1:3000", `127.0.0.1:${apiPort}`);

  const servers: ChildProcess[] = [];
  const variables: string[] = [];
  try {
    for (const [index, block] of blocks.entries()) {
      const script = localize(index === 0 ? block.script.replace(/^npm install\n/, "") : block.script);
      if (block.kind === "quickstart server") {
        const server = spawn("bash", ["-c", `${prelude}${script}`], {
          cwd: dir,
          env,
          stdio: ["ignore", "pipe", "pipe"],
          detached: true,
        });
        servers.push(server);
        await untilListening(server, `block ${index + 1}`, 180_000);
        continue;
      }
      variables.push(...assignedVariables(block.script));
      const save = variables.length > 0 ? `\ndeclare -p ${variables.join(" ")} > .quickstart-state\n` : "";
      const run = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          "bash",
          ["-c", `${prelude}${script}${save}`],
          { cwd: dir, env, timeout: 180_000 },
          (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? -1) : 0, stdout, stderr }),
        );
      });
      assert.equal(run.code, 0, `block ${index + 1} failed:\n${script}\n${run.stderr}`);
      const expected = documentedOutput(block.script);
      if (expected) assert.equal(run.stdout, expected, `block ${index + 1} printed other output`);
    }

    // What the first block wrote: a config with the development default's resource, the secret in a
    // file only its owner reads.
    const config = path.join(dir, "countersign.json");
    assert.equal(statSync(config).mode & 0o777, 0o600);
    const written = JSON.parse(readFileSync(config, "utf8")) as {
      resources: Array<{ id: string }>;
      clients: Array<{ client_id: string }>;
      dev_mode: boolean;
    };
    assert.deepEqual(
      written.resources.map((resource) => resource.id),
      ["https://crm.example.test"],
    );
    assert.deepEqual(
      written.clients.map((client) => client.client_id),
      ["billing-agent"],
    );
    assert.equal(written.dev_mode, true);
    // The exchange really ran under the approval the human approved: its budget counts one token.
    const state = readFileSync(path.join(dir, ".quickstart-state"), "utf8");
    const approval = /APPROVAL="(apr_[A-Za-z0-9_-]+)"/.exec(state)?.[1];
    assert.ok(approval, state);
    const shown = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [path.join(root, "bin/countersign.js"), "approvals", "show", approval, "--json"],
        { cwd: dir, env, timeout: 120_000 },
        (error, stdout, stderr) => (error ? reject(new Error(stderr)) : resolve(stdout)),
      );
    });
    const shownApproval = JSON.parse(shown) as Record<string, unknown>;
    assert.equal(shownApproval.status, "approved");
    assert.equal(shownApproval.tokens_issued, 1);
    assert.equal(shownApproval.client_id, "billing-agent");
  } finally {
    for (const server of servers.reverse()) await stopGroup(server, 15_000);
    rmSync(dir, { recursive: true, force: true });
  }
});
