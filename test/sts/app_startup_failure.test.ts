import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, mock, test } from "node:test";
import { pathToFileURL } from "node:url";
import { createApp } from "../../sts/src/app.js";
import { loadConfig } from "../../sts/src/config/load.js";
import type { DatabaseHandle } from "../../sts/src/db/connect.js";
import { createLogger } from "../../sts/src/ops/logger.js";
import { PolicyLoadError } from "../../sts/src/policy/load.js";
import { baseConfig, LogCapture, startTestApp } from "../helpers/app.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../helpers/database.js";
import { countersign, root } from "../helpers/processes.js";

/** A policy Cedar refuses to parse: `nonsense` is no variable. */
const INVALID_POLICY = "permit(principal, action, resource) when { nonsense };\n";

/** The error the STS start throws for {@link INVALID_POLICY} in `file`. */
function invalidPolicyMessage(file: string): string {
  return (
    "invalid Cedar policies:\n" +
    `  ${file}:1:44: syntax error: invalid variable: nonsense (the valid Cedar variables are \`principal\`, ` +
    "`action`, `resource`, and `context`; did you mean to enclose `nonsense` in quotes to make a string?)"
  );
}

let workDir: string;
let policyFile: string;
before(() => {
  workDir = mkdtempSync(path.join(tmpdir(), "countersign-startup-failure-"));
  policyFile = path.join(workDir, "invalid.cedar");
  writeFileSync(policyFile, INVALID_POLICY);
});
after(() => rmSync(workDir, { recursive: true, force: true }));

/** A test database that records the handles opened on it and whether each was closed. */
function recordingDatabase(inner: TestDatabase): {
  database: TestDatabase;
  handles: { handle: DatabaseHandle; closed: boolean }[];
} {
  const handles: { handle: DatabaseHandle; closed: boolean }[] = [];
  const database: TestDatabase = {
    engine: inner.engine,
    url: inner.url,
    async open() {
      const handle = await inner.open();
      const entry = { handle, closed: false };
      handles.push(entry);
      return {
        ...handle,
        close: async () => {
          entry.closed = true;
          await handle.close();
        },
      };
    },
    dispose: () => inner.dispose(),
  };
  return { database, handles };
}

for (const engine of testEngines()) {
  describe(`the test app's start failing on ${engine}`, () => {
    test("startTestApp with an invalid Cedar policy rejects with the PolicyLoadError and closes the database it opened", async () => {
      const inner = await createTestDatabase(engine);
      const { database, handles } = recordingDatabase(inner);
      try {
        await assert.rejects(
          startTestApp({ engine, database, config: { ...baseConfig(), policies: [policyFile] } }),
          (error: unknown) => {
            assert.ok(error instanceof PolicyLoadError);
            assert.equal(error.code, "ERR_POLICY_INVALID");
            assert.equal(error.message, invalidPolicyMessage(policyFile));
            return true;
          },
        );
        assert.equal(handles.length, 1);
        assert.equal(handles[0]?.closed, true);
        if (engine === "pglite") assert.equal(handles[0]?.handle.pglite?.closed, true);
        else assert.equal(handles[0]?.handle.pool?.totalCount, 0);
      } finally {
        await inner.dispose();
      }
    });
  });
}

describe("a test process whose app fails to start", () => {
  test("ends by itself, reporting the PolicyLoadError of its before() (the app's database is not left open)", async () => {
    // A test file whose before() starts the app with an invalid policy. Before the harness closed what
    // it had opened, the in-memory PGlite kept a timer armed and this process never exited.
    const testFile = path.join(workDir, "start_with_invalid_policy.test.mts");
    const helper = pathToFileURL(path.join(root, "test/helpers/app.ts")).href;
    writeFileSync(
      testFile,
      'import { before, test } from "node:test";\n' +
        `import { baseConfig, startTestApp } from ${JSON.stringify(helper)};\n` +
        `before(() => startTestApp({ engine: "pglite", config: { ...baseConfig(), policies: [${JSON.stringify(policyFile)}] } }));\n` +
        'test("never runs", () => {});\n',
    );
    // A test run of its own: not a subtest of this one (NODE_TEST_CONTEXT), on PGlite only.
    const { DATABASE_URL: _db, NODE_TEST_CONTEXT: _context, ...env } = process.env;
    const result = await new Promise<{ code: number | string | null; signal: string | null; output: string }>(
      (resolve) => {
        // The bound only ends a process that hangs (the failure asserted below); it measures nothing.
        execFile(
          process.execPath,
          ["--import", "tsx", "--test", "--test-reporter=tap", testFile],
          { cwd: root, env, timeout: 60_000, killSignal: "SIGKILL" },
          (error, stdout, stderr) =>
            resolve({ code: error?.code ?? 0, signal: error?.signal ?? null, output: stdout + stderr }),
        );
      },
    );
    assert.equal(result.signal, null, `the test process did not end by itself:\n${result.output}`);
    assert.equal(result.code, 1);
    assert.match(result.output, /^# fail 1$/m);
    assert.ok(result.output.includes("invalid Cedar policies:"), result.output);
    assert.ok(result.output.includes(`${policyFile}:1:44: syntax error: invalid variable: nonsense`));
  });
});

describe("createApp failing after it opened the embedded database", () => {
  test("stops every background loop it started, closes the database (lock released) and rethrows", async (t) => {
    const dataDir = path.join(workDir, "data");
    const config = loadConfig(
      { HOST: "127.0.0.1", PORT: "0", COUNTERSIGN_DATA_DIR: dataDir, LOG_LEVEL: "info" },
      { ...baseConfig(), webhooks: [{ url: "http://127.0.0.1:9/hooks", secret: "w".repeat(32) }] },
    );
    // The last step of the start (the retention loop's first timer) fails, after the database, the
    // revocation service, the webhook dispatcher and the key maintenance are up.
    const failure = new Error("retention timer refused");
    const timers = {
      setTimeout: () => {
        throw failure;
      },
      clearTimeout: () => {},
    };
    // Every timer the start schedules, and whether it was cleared (or, for a timeout, has run).
    const scheduled = new Map<NodeJS.Timeout, { kind: string; done: boolean }>();
    const realSetTimeout = globalThis.setTimeout;
    const realSetInterval = globalThis.setInterval;
    const realClearTimeout = globalThis.clearTimeout;
    const realClearInterval = globalThis.clearInterval;
    const clear = (timer: unknown) => {
      const entry = scheduled.get(timer as NodeJS.Timeout);
      if (entry) entry.done = true;
    };
    mock.method(
      globalThis,
      "setTimeout",
      (run: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        const timer: NodeJS.Timeout = realSetTimeout(() => {
          const entry = scheduled.get(timer);
          if (entry) entry.done = true;
          run(...args);
        }, ms);
        scheduled.set(timer, { kind: "timeout", done: false });
        return timer;
      },
    );
    mock.method(
      globalThis,
      "setInterval",
      (run: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        const timer = realSetInterval(run, ms, ...args);
        scheduled.set(timer, { kind: "interval", done: false });
        return timer;
      },
    );
    mock.method(globalThis, "clearTimeout", (timer?: NodeJS.Timeout) => {
      clear(timer);
      realClearTimeout(timer);
    });
    mock.method(globalThis, "clearInterval", (timer?: NodeJS.Timeout) => {
      clear(timer);
      realClearInterval(timer);
    });
    const logs = new LogCapture();
    try {
      await assert.rejects(
        createApp(config, { logger: createLogger("info", logs), retentionTimers: timers }),
        (error: unknown) => error === failure,
      );
    } finally {
      mock.restoreAll();
    }
    t.diagnostic(`timers scheduled during the start: ${scheduled.size}`);
    const left = [...scheduled.values()].filter((entry) => !entry.done).map((entry) => entry.kind);
    assert.deepEqual(left, []);
    assert.equal(existsSync(path.join(dataDir, "pglite.lock")), false);
    assert.doesNotMatch(logs.text, /webhook round failed|key maintenance failed/);
  });
});

describe("countersign serve on a port already taken", () => {
  test("exits 1 with the listen error and closes the embedded database (lock released)", async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const { port } = taken.address() as net.AddressInfo;
    const dataDir = path.join(workDir, "serve-data");
    try {
      const result = await countersign(["serve"], {
        HOST: "127.0.0.1",
        PORT: String(port),
        COUNTERSIGN_DATA_DIR: dataDir,
        LOG_LEVEL: "error",
      });
      assert.equal(result.code, 1);
      assert.equal(
        result.stderr,
        `countersign: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n`,
      );
      // process.exit would have left the lock file behind had serve not closed the app first.
      assert.equal(existsSync(path.join(dataDir, "pglite.lock")), false);
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });
});
