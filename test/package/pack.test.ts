import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  accessSync,
  constants,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { REASONS } from "../../gateway-verifier/src/reasons.js";
import { startTestApp, type TestApp } from "../helpers/app.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "../..");
const packageDir = path.join(root, "gateway-verifier");
const AUDIENCE = "https://crm.example.test";
/** npm is slow on a cold cache and a busy machine: minutes, not seconds. */
const NPM_TIMEOUT_MS = 300_000;

/**
 * The environment for a child npm or node: without the `npm_*` variables an enclosing `npm test`
 * sets (an inherited `npm_config_*` would make the child npm act on this repo, not the temp project).
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(name) && name !== "INIT_CWD") env[name] = value;
  }
  return { ...env, ...extra };
}

function npm(args: string[], cwd: string) {
  return run("npm", args, { cwd, env: cleanEnv(), timeout: NPM_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
}

/** Whether the npm registry answers (the only reason these tests may skip). */
async function registryReachable(): Promise<boolean> {
  try {
    await run("npm", ["ping"], { cwd: tmpdir(), env: cleanEnv(), timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

/** Every `node` on PATH outside a node_modules/.bin (the machine's own), with its version. */
async function systemNodes(): Promise<Array<{ path: string; version: string }>> {
  const own = realpathSync(process.execPath);
  const seen = new Set<string>([own]);
  const found: Array<{ path: string; version: string }> = [];
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "" || dir.split(path.sep).includes("node_modules")) continue;
    const candidate = path.join(dir, "node");
    let real: string;
    try {
      accessSync(candidate, constants.X_OK);
      real = realpathSync(candidate);
    } catch {
      continue;
    }
    if (seen.has(real)) continue;
    seen.add(real);
    const { stdout } = await run(candidate, ["--version"], { timeout: 30_000 });
    found.push({ path: candidate, version: stdout.trim() });
  }
  return found;
}

interface Reply {
  status: number;
  challenge: string | null;
  body: Record<string, unknown>;
}
interface CheckResult {
  node: string;
  direct: Record<string, unknown>;
  connect: Record<string, Reply>;
  koa: Record<string, Reply>;
}

const reachable = await registryReachable();

describe("@countersign/gateway-verifier, packed with npm pack and installed into an empty project", {
  skip: reachable ? false : "the npm registry is unreachable (npm ping failed): cannot install jose",
}, () => {
  let work: string;
  let consumer: string;
  let packed: { filename: string; files: Array<{ path: string }> };
  let installedLock: { packages: Record<string, { version?: string; dependencies?: unknown }> };
  let topLevel: string[];
  let sts: TestApp;
  let token: string;
  let approvalId: string;

  before(
    async () => {
      work = mkdtempSync(path.join(tmpdir(), "countersign-pack-"));
      // npm pack runs the package's `prepack`: its own build of gateway-verifier/dist.
      const { stdout } = await npm(["pack", "--json", "--pack-destination", work], packageDir);
      const [entry] = JSON.parse(stdout) as Array<typeof packed>;
      assert.ok(entry);
      packed = entry;

      consumer = path.join(work, "consumer");
      mkdirSync(consumer);
      writeFileSync(
        path.join(consumer, "package.json"),
        `${JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" })}\n`,
      );
      await npm(["install", "--no-audit", "--no-fund", path.join(work, packed.filename)], consumer);
      // What the tarball alone brought in, before koa is added for the Koa adapter.
      installedLock = JSON.parse(readFileSync(path.join(consumer, "package-lock.json"), "utf8"));
      topLevel = readdirSync(path.join(consumer, "node_modules")).filter((name) => !name.startsWith("."));
      await npm(["install", "--no-audit", "--no-fund", "koa@^3"], consumer);
      cpSync(path.join(import.meta.dirname, "consumer_check.mjs"), path.join(consumer, "check.mjs"));

      sts = await startTestApp({ engine: "pglite" });
      approvalId = await insertApproval(sts.handle.db, { scope: "crm:read crm:write" });
      const minted = await exchange(sts.url, {
        subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
        authorization_details: agentTask(approvalId),
      });
      assert.equal(minted.status, 200);
      token = minted.body.access_token as string;
    },
    { timeout: 4 * NPM_TIMEOUT_MS },
  );
  after(async () => {
    await sts?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  test("the tarball holds the built package, its README and LICENSE, and no sources or tests", () => {
    assert.equal(packed.filename, "countersign-gateway-verifier-0.1.0.tgz");
    const files = packed.files.map((file) => file.path).sort();
    assert.deepEqual(
      files.filter((file) => !file.startsWith("dist/")),
      ["LICENSE", "README.md", "package.json"],
    );
    for (const file of [
      "dist/index.js",
      "dist/index.d.ts",
      "dist/koa.js",
      "dist/connect.js",
      "dist/mcp/index.js",
    ]) {
      assert.ok(files.includes(file), `${file} is packed`);
    }
    const strays = files.filter((file) => file.startsWith("dist/") && !/\.(js|d\.ts)$/.test(file));
    assert.deepEqual(strays, [], "dist holds only .js and .d.ts");
    assert.equal(
      readFileSync(path.join(consumer, "node_modules/@countersign/gateway-verifier/LICENSE"), "utf8"),
      readFileSync(path.join(root, "LICENSE"), "utf8"),
    );
  });

  test("installing it pulls in jose and nothing else (optional peers are not installed)", () => {
    assert.deepEqual(topLevel.sort(), ["@countersign", "jose"]);
    assert.deepEqual(readdirSync(path.join(consumer, "node_modules/@countersign")), ["gateway-verifier"]);
    assert.deepEqual(Object.keys(installedLock.packages).sort(), [
      "",
      "node_modules/@countersign/gateway-verifier",
      "node_modules/jose",
    ]);
    const manifest = JSON.parse(
      readFileSync(path.join(consumer, "node_modules/@countersign/gateway-verifier/package.json"), "utf8"),
    );
    assert.equal(manifest.name, "@countersign/gateway-verifier");
    assert.equal(manifest.license, "Apache-2.0");
    assert.deepEqual(manifest.engines, { node: ">=20.19" });
    assert.deepEqual(Object.keys(manifest.dependencies), ["jose"]);
    // Installing the verifier runs none of its code (and npm has no install script to ask about).
    const installTime = ["preinstall", "install", "postinstall", "prepare"];
    assert.deepEqual(
      Object.keys(manifest.scripts ?? {}).filter((name) => installTime.includes(name)),
      [],
    );
    assert.deepEqual(manifest.peerDependenciesMeta, {
      "@types/koa": { optional: true },
      ioredis: { optional: true },
      "rate-limiter-flexible": { optional: true },
    });
    assert.deepEqual(
      Object.keys(manifest.peerDependencies).sort(),
      Object.keys(manifest.peerDependenciesMeta),
    );
  });

  /** Runs the consumer's check script with `node` and asserts every answer it got. */
  async function check(node: string, expectedMajor?: number): Promise<void> {
    const { stdout } = await run(node, ["check.mjs"], {
      cwd: consumer,
      env: cleanEnv({ ISSUER: sts.url, AUDIENCE, TOKEN: token }),
      timeout: 60_000,
    });
    const result = JSON.parse(stdout) as CheckResult;
    if (expectedMajor !== undefined) assert.match(result.node, new RegExp(`^v${expectedMajor}\\.`));
    assert.deepEqual(result.direct, {
      ok: true,
      approvalId,
      subject: "alice",
      clientId: "billing-agent",
    });
    for (const adapter of [result.connect, result.koa]) {
      assert.deepEqual(adapter.ok, {
        status: 200,
        challenge: null,
        body: { approval_id: approvalId, sub: "alice" },
      });
      assert.deepEqual(adapter.missingScope, {
        status: 403,
        challenge: `Bearer error="insufficient_scope", error_description="${REASONS.insufficient_scope.description}", scope="crm:delete"`,
        body: { error: "insufficient_scope", error_description: REASONS.insufficient_scope.description },
      });
      assert.deepEqual(adapter.noToken, {
        status: 401,
        challenge: 'Bearer, DPoP algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"',
        body: { error: "invalid_token", error_description: REASONS.missing_token.description },
      });
      assert.deepEqual(adapter.forged, {
        status: 401,
        challenge: `Bearer error="invalid_token", error_description="${REASONS.invalid_signature.description}"`,
        body: { error: "invalid_token", error_description: REASONS.invalid_signature.description },
      });
    }
    // A CommonJS project loads the same build through require(esm) (Node 20.19+, 22.12+).
    const required = await run(
      node,
      [
        "--input-type=commonjs",
        "-e",
        "const m = require('@countersign/gateway-verifier'); console.log(JSON.stringify([typeof m.createVerifier, typeof m.connectVerifier, typeof m.koaVerifier, m.REASONS.invalid_signature.status]))",
      ],
      { cwd: consumer, env: cleanEnv(), timeout: 60_000 },
    );
    assert.deepEqual(JSON.parse(required.stdout), ["function", "function", "function", 401]);
  }

  test("verifies a real STS token on the project's Node: createVerifier, connect and Koa adapters, require()", async (t) => {
    t.diagnostic(`${process.execPath} ${process.version}`);
    await check(process.execPath);
  });

  test("verifies a real STS token on the machine's Node 20 too (import and require())", async (t) => {
    const node20 = (await systemNodes()).find((node) => node.version.startsWith("v20."));
    if (node20 === undefined) {
      t.skip("no Node 20 on PATH outside node_modules/.bin");
      return;
    }
    t.diagnostic(`${node20.path} ${node20.version}`);
    await check(node20.path, 20);
  });
});

test("the root package's tarball (npm pack --dry-run) holds no config, key, data, test or bench files", async () => {
  // A copy of the checkout with what an operator's working directory holds after `npm start`.
  const copy = mkdtempSync(path.join(tmpdir(), "countersign-rootpack-"));
  try {
    const skip = new Set(
      ["node_modules", ".git", "dist", ".countersign", "scratch", "coverage"].map((name) =>
        path.join(root, name),
      ),
    );
    cpSync(root, copy, { recursive: true, filter: (source) => !skip.has(source) });
    writeFileSync(path.join(copy, "countersign.json"), '{"clients":[{"client_secret":"s3cret"}]}\n');
    mkdirSync(path.join(copy, ".countersign/keys"), { recursive: true });
    writeFileSync(path.join(copy, ".countersign/keys/signing.jwk"), "{}\n");
    writeFileSync(path.join(copy, ".countersign/PG_VERSION"), "17\n");
    writeFileSync(path.join(copy, "sts/src/leaked.jwk"), "{}\n");
    mkdirSync(path.join(copy, "dist/sts/src"), { recursive: true });
    writeFileSync(path.join(copy, "dist/sts/src/cli.js"), "export {};\n");

    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], {
      cwd: copy,
      env: cleanEnv(),
      timeout: 120_000,
    });
    const [entry] = JSON.parse(stdout) as Array<{ files: Array<{ path: string }> }>;
    assert.ok(entry);
    const files = entry.files.map((file) => file.path);
    const forbidden = files.filter(
      (file) =>
        path.basename(file) === "countersign.json" ||
        file.startsWith(".countersign/") ||
        file.endsWith(".jwk") ||
        /\.test\.[cm]?[jt]s$/.test(file) ||
        /^(test|bench|examples|scratch|coverage)\//.test(file),
    );
    assert.deepEqual(forbidden, []);
    for (const file of [
      "package.json",
      "LICENSE",
      "README.md",
      "bin/countersign.js",
      "sts/src/cli.ts",
      "gateway-verifier/src/index.ts",
      "migrations/2026_11_25_0001_initial.ts",
      "policies/default.cedar",
      "dist/sts/src/cli.js",
    ]) {
      assert.ok(files.includes(file), `${file} is packed`);
    }
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
});
