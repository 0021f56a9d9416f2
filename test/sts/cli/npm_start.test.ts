import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { freePort } from "../../helpers/app.js";
import { root, waitForLine } from "../../helpers/processes.js";
import { openStream } from "../revocations/support.js";

/** True while any process of process group `pgid` exists (zombies included). */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Resolves once no process of group `pgid` is left; rejects after `timeoutMs`. */
async function groupGone(pgid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (groupAlive(pgid)) {
    if (Date.now() > deadline)
      throw new Error(`process group ${pgid} still has processes after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `promise`, or a rejection naming `what` after `timeoutMs`. */
async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Listens on `port` and closes again: resolves when the port is free, rejects (EADDRINUSE) when not. */
async function listenOnce(port: number): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

test("SIGTERM to `npm start` alone: the STS drains, streams close, every process ends, npm exits 0, the port is free", {
  skip: process.platform === "win32" && "process groups and `exec` are POSIX",
}, async () => {
  assert.ok(
    existsSync(path.join(root, "dist/sts/src/cli.js")),
    "dist/ is not built: `npm run build` (npm install runs it)",
  );
  const dir = mkdtempSync(path.join(tmpdir(), "countersign-npm-start-"));
  const port = await freePort();
  const { DATABASE_URL: _db, COUNTERSIGN_CONFIG: _config, HOST: _host, ...rest } = process.env;
  // Its own process group, so the test sees every process npm starts (and can clean up after a failure).
  const npm = spawn("npm", ["start"], {
    cwd: root,
    env: { ...rest, PORT: String(port), COUNTERSIGN_DATA_DIR: dir, LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const pgid = npm.pid;
  assert.ok(pgid);
  try {
    const exited = once(npm, "exit");
    await waitForLine(npm, /countersign listening/, 120_000);
    const url = `http://127.0.0.1:${port}`;
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    // The STS runs on the project's Node 22 (node_modules/.bin), not the machine's older node.
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const major = /^countersign_nodejs_version_info\{[^}]*major="(\d+)"/m.exec(metrics)?.[1];
    assert.ok(Number(major) >= 22, `the STS runs on Node ${major}`);

    const stream = await openStream(`${url}/revocations/stream`);
    assert.equal(stream.status, 200);
    assert.equal(stream.headers.get("content-type"), "text/event-stream; charset=utf-8");

    process.kill(pgid, "SIGTERM"); // npm alone, as docker stop, systemd and process managers do
    const bound = groupGone(pgid, 10_000);
    const [code, signal] = await within(exited, 10_000, "npm exits");
    assert.deepEqual({ code, signal }, { code: 0, signal: null });
    await bound;
    await within(stream.ended, 1000, "the server ends the revocation stream");
    await listenOnce(port);
    assert.ok(existsSync(dir));
    assert.equal(existsSync(path.join(dir, "pglite.lock")), false, "the database lock is released");
  } finally {
    if (groupAlive(pgid)) process.kill(-pgid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
