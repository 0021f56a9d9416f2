import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { freePort } from "../../helpers/app.js";
import { cli, countersign, waitForLine } from "../../helpers/processes.js";

async function publishedKids(url: string): Promise<string[]> {
  const jwks = (await (await fetch(`${url}/jwks`)).json()) as { keys: { kid: string }[] };
  return jwks.keys.map((key) => key.kid);
}

test("keys rotate, keys list and migrate while an STS holds the embedded database: refused at once (exit 75, what to do), nothing changed; after the STS stops keys rotate works", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "countersign-keys-embedded-"));
  const port = await freePort();
  const { DATABASE_URL: _db, COUNTERSIGN_CONFIG: _config, HOST: _host, ...rest } = process.env;
  const server = spawn(process.execPath, [cli, "serve"], {
    env: { ...rest, PORT: String(port), COUNTERSIGN_DATA_DIR: dir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    await waitForLine(server, /countersign listening/, 120_000);
    const url = `http://127.0.0.1:${port}`;
    const before = await publishedKids(url);
    assert.equal(before.length, 2);

    for (const [args, what] of [
      [["keys", "rotate"], "rotate keys"],
      [["keys", "list"], "list keys"],
      [["migrate"], "apply migrations"],
    ] as const) {
      assert.deepEqual(await countersign([...args], { COUNTERSIGN_DATA_DIR: dir }), {
        code: 75,
        stdout: "",
        stderr:
          `countersign: cannot ${what}: the embedded database in ${dir} is in use by process ${server.pid}: ` +
          "stop it first, or use DATABASE_URL (the embedded database opens in one process only; with " +
          "Postgres, DATABASE_URL, this works while the STS runs)\n",
      });
    }
    assert.deepEqual(await publishedKids(url), before);

    const exited = once(server, "exit");
    server.kill("SIGTERM");
    assert.deepEqual(await exited, [0, null]);
    const rotated = await countersign(["keys", "rotate", "--json"], { COUNTERSIGN_DATA_DIR: dir });
    assert.equal(rotated.code, 0, rotated.stderr);
    const result = JSON.parse(rotated.stdout) as { current: string; next: string; previous: string };
    assert.deepEqual([result.previous, result.current], before);
    const listed = await countersign(["keys", "list", "--json"], { COUNTERSIGN_DATA_DIR: dir });
    const keys = (JSON.parse(listed.stdout) as { keys: { kid: string; status: string }[] }).keys;
    assert.deepEqual(Object.fromEntries(keys.map((key) => [key.kid, key.status])), {
      [result.current]: "current",
      [result.next]: "next",
      [result.previous]: "previous",
    });
  } finally {
    if (server.exitCode === null) server.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
