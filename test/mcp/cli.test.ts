import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { freePort } from "../helpers/app.js";

const root = path.resolve(import.meta.dirname, "../..");
const cli = path.join(root, "bin/countersign.js");
const dir = mkdtempSync(path.join(tmpdir(), "countersign-mcp-cli-"));

function writeConfig(name: string, config: Record<string, unknown>): string {
  const file = path.join(dir, name);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

describe("countersign mcp-gateway", () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("serves metadata and challenges from a config file and flags, and stops on SIGTERM", async () => {
    const port = await freePort();
    const config = writeConfig("gateway.json", {
      upstream: "http://127.0.0.1:9/mcp",
      resource: "https://tools.example.test/mcp",
      issuer: "http://127.0.0.1:8080",
      default_scopes: ["tools:read"],
      tools: { send_email: ["mail:send"] },
    });
    const child = spawn(process.execPath, [cli, "mcp-gateway", "--config", config, "--port", String(port)], {
      env: { ...process.env, LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      let output = "";
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (chunk: Buffer) => {
          output += chunk.toString();
          if (output.includes("mcp gateway listening")) resolve();
        });
        child.once("exit", (code) => reject(new Error(`exited ${code}: ${output}`)));
      });
      const listening = JSON.parse(output.split("\n").find((line) => line.includes("listening")) ?? "{}");
      assert.equal(listening.url, `http://127.0.0.1:${port}`);
      assert.equal(
        listening.resource_metadata,
        "https://tools.example.test/.well-known/oauth-protected-resource/mcp",
      );
      const metadata = await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`);
      assert.deepEqual(await metadata.json(), {
        resource: "https://tools.example.test/mcp",
        authorization_servers: ["http://127.0.0.1:8080"],
        scopes_supported: ["tools:read"],
        bearer_methods_supported: ["header"],
        dpop_signing_alg_values_supported: ["ES256", "ES384", "EdDSA", "Ed25519", "PS256", "RS256"],
        dpop_bound_access_tokens_required: false,
      });
      const refused = await fetch(`http://127.0.0.1:${port}/mcp`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
      });
      assert.equal(refused.status, 401);
      assert.equal(
        refused.headers.get("www-authenticate"),
        'Bearer resource_metadata="https://tools.example.test/.well-known/oauth-protected-resource/mcp", ' +
          'scope="tools:read", DPoP algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"',
      );
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
      assert.match(output, /"reason":"missing_token"/);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("an invalid config exits 78 naming every bad key", async () => {
    const config = writeConfig("bad.json", { upstream: "http://127.0.0.1:9/mcp", tools: { x: "mail:send" } });
    const run = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [cli, "mcp-gateway", "--config", config],
        { timeout: 60_000 },
        (error, _out, stderr) => resolve({ code: error ? Number(error.code) : 0, stderr }),
      );
    });
    assert.equal(run.code, 78);
    assert.equal(
      run.stderr,
      "countersign: invalid mcp-gateway config: resource is required; issuer is required; " +
        'tools["x"] must be an array of at most 100 scopes\n',
    );
  });
});
