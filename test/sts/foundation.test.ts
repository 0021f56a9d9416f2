import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  jwtVerify,
  SignJWT,
} from "jose";
import { sql } from "kysely";
import { dataDirKekAdvice } from "../../sts/src/keys/kek.js";
import { baseConfig, basicAuth, postForm, startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { createTestDatabase, testEngines } from "../helpers/database.js";

const run = promisify(execFile);

/** The migrations shipped in migrations/, in the order they apply. */
function migrationNames(): string[] {
  return readdirSync(path.join(path.resolve(import.meta.dirname, "../.."), "migrations"))
    .filter((file) => file.endsWith(".ts"))
    .map((file) => file.replace(/\.ts$/, ""))
    .sort();
}
const root = path.resolve(import.meta.dirname, "../..");

for (const engine of testEngines()) {
  describe(`foundation on ${engine}`, () => {
    let sts: TestApp;
    let clientKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];

    before(async () => {
      const pair = await generateKeyPair("ES256");
      clientKey = pair.privateKey;
      const publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "triage-1", alg: "ES256", use: "sig" };
      sts = await startTestApp({
        engine,
        config: {
          resources: [{ id: "https://crm.example.test", scopes: ["crm:read"] }],
          clients: [
            {
              client_id: "billing-agent",
              client_secret: TEST_SECRET,
              token_endpoint_auth_method: "client_secret_basic",
            },
            {
              client_id: "post-agent",
              client_secret: TEST_SECRET,
              token_endpoint_auth_method: "client_secret_post",
            },
            {
              client_id: "triage-agent",
              jwks: { keys: [publicJwk] },
              token_endpoint_auth_method: "private_key_jwt",
            },
          ],
          dev_mode: true,
        },
      });
    });
    after(() => sts.stop());

    test("discovery lists the implemented grants and auth methods, at both well-known paths", async () => {
      for (const wellKnown of [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
      ]) {
        const response = await fetch(`${sts.url}${wellKnown}`);
        assert.equal(response.status, 200);
        const metadata = (await response.json()) as Record<string, unknown>;
        assert.equal(metadata.issuer, sts.url);
        assert.equal(metadata.token_endpoint, `${sts.url}/token`);
        assert.equal(metadata.jwks_uri, `${sts.url}/jwks`);
        assert.ok((metadata.grant_types_supported as string[]).includes("client_credentials"));
        assert.deepEqual(metadata.token_endpoint_auth_methods_supported, [
          "client_secret_basic",
          "client_secret_post",
          "private_key_jwt",
        ]);
      }
    });

    test("/jwks serves the current ES256 key and the announced next one, nothing private", async () => {
      const response = await fetch(`${sts.url}/jwks`);
      const jwks = (await response.json()) as { keys: Record<string, unknown>[] };
      const published = await sts.handle.db.selectFrom("signing_keys").select(["kid", "status"]).execute();
      assert.deepEqual(published.map((k) => k.status).sort(), ["current", "next"]);
      assert.equal(jwks.keys.length, 2);
      const current = published.find((k) => k.status === "current")?.kid;
      assert.equal(jwks.keys[0]?.kid, current, "the current key is listed first");
      for (const key of jwks.keys) {
        assert.equal(key.alg, "ES256");
        assert.equal(key.kty, "EC");
        assert.equal(key.crv, "P-256");
        assert.equal(key.use, "sig");
        assert.equal(key.d, undefined);
      }
    });

    async function verifyAgainstJwks(token: string) {
      const jwks = createRemoteJWKSet(new URL(`${sts.url}/jwks`));
      return jwtVerify(token, jwks, {
        issuer: sts.url,
        audience: `${sts.url}/approvals`,
        typ: "at+jwt",
        algorithms: ["ES256"],
      });
    }

    test("client_credentials (client_secret_basic) issues an RFC 9068 at+jwt for the approval API", async () => {
      const { status, body } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(status, 200);
      assert.equal(body.token_type, "Bearer");
      assert.equal(body.scope, "approvals:request");
      assert.equal(body.expires_in, 300);
      const token = body.access_token as string;
      const { payload, protectedHeader } = await verifyAgainstJwks(token);
      assert.equal(protectedHeader.typ, "at+jwt");
      assert.equal(protectedHeader.alg, "ES256");
      assert.equal(payload.iss, sts.url);
      assert.equal(payload.aud, `${sts.url}/approvals`);
      assert.equal(payload.scope, "approvals:request");
      assert.equal(payload.client_id, "billing-agent");
      assert.equal(payload.sub, "billing-agent");
      assert.equal((payload.exp as number) - (payload.iat as number), 300);
      assert.equal(typeof payload.jti, "string");
      assert.ok(!sts.logs.text.includes(token), "the token must never be logged");
      assert.ok(!sts.logs.text.includes(TEST_SECRET), "the secret must never be logged");
    });

    test("client_credentials with client_secret_post", async () => {
      const { status, body } = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        scope: "approvals:request",
        client_id: "post-agent",
        client_secret: TEST_SECRET,
      });
      assert.equal(status, 200);
      const { payload } = await verifyAgainstJwks(body.access_token as string);
      assert.equal(payload.client_id, "post-agent");
    });

    test("client_credentials with private_key_jwt (RFC 7523)", async () => {
      const assertion = await new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "triage-1" })
        .setIssuer("triage-agent")
        .setSubject("triage-agent")
        .setAudience(sts.url)
        .setJti(crypto.randomUUID())
        .setIssuedAt()
        .setExpirationTime("1m")
        .sign(clientKey);
      const { status, body } = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        scope: "approvals:request",
        client_id: "triage-agent",
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: assertion,
      });
      assert.equal(status, 200);
      const { payload } = await verifyAgainstJwks(body.access_token as string);
      assert.equal(payload.client_id, "triage-agent");
      // The same assertion twice is a replay (its jti is stored through the Postgres adapter).
      const replay = await postForm(`${sts.url}/token`, {
        grant_type: "client_credentials",
        client_id: "triage-agent",
        client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion: assertion,
      });
      assert.equal(replay.status, 401);
      assert.equal(replay.body.error, "invalid_client");
    });

    test("a wrong secret is 401 invalid_client", async () => {
      const { status, body, headers } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", scope: "approvals:request" },
        { authorization: basicAuth("billing-agent", `${TEST_SECRET}x`) },
      );
      assert.equal(status, 401);
      assert.equal(body.error, "invalid_client");
      assert.equal(body.error_description, "client authentication failed");
      assert.match(headers.get("www-authenticate") ?? "", /^Basic /);
    });

    test("an unknown client is 401 invalid_client", async () => {
      const { status, body } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials" },
        { authorization: basicAuth("nobody", TEST_SECRET) },
      );
      assert.equal(status, 401);
      assert.equal(body.error, "invalid_client");
    });

    test("client_credentials cannot reach an API resource directly (only through approvals)", async () => {
      const { status, body } = await postForm(
        `${sts.url}/token`,
        { grant_type: "client_credentials", resource: "https://crm.example.test", scope: "crm:read" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(status, 400);
      assert.equal(body.error, "invalid_target");
    });

    test("/healthz, /readyz and Prometheus /metrics", async () => {
      const health = await fetch(`${sts.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: "ok" });
      const ready = await fetch(`${sts.url}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { status: "ok", database: "ok" });
      const metrics = await fetch(`${sts.url}/metrics`);
      assert.equal(metrics.status, 200);
      const text = await metrics.text();
      assert.match(text, /countersign_http_requests_total\{route="token",method="POST",status="200"\} \d+/);
      assert.match(text, /countersign_process_resident_memory_bytes/);
    });

    test("signing keys are sealed at rest", async () => {
      const row = await sts.handle.db
        .selectFrom("signing_keys")
        .select(["kid", "private_jwk_enc", "status"])
        .executeTakeFirstOrThrow();
      assert.ok(["current", "next"].includes(row.status));
      assert.match(row.private_jwk_enc, /^v1\.[\w-]+\.[\w-]+\.[\w-]+$/);
      assert.ok(!row.private_jwk_enc.includes('"d"'));
      const kek = statSync(path.join(sts.dataDir, "kek"));
      assert.equal(kek.mode & 0o777, 0o600);
    });

    test("migrations are idempotent", async () => {
      const { migrateToLatest } = await import("../../sts/src/db/migrate.js");
      assert.deepEqual(await migrateToLatest(sts.handle.db), []);
      const rows = await sql<{ n: number }>`select count(*)::int as n from kysely_migration`.execute(
        sts.handle.db,
      );
      assert.equal(rows.rows[0]?.n, migrationNames().length);
    });
  });
}

describe("CORS at the token endpoint", () => {
  const ORIGIN = "https://evil.example";
  let sts: TestApp;
  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
  });
  after(() => sts.stop());

  const corsHeaders = (headers: Headers) =>
    [...headers.keys()].filter((name) => name.toLowerCase().startsWith("access-control-"));

  test("a preflight and every POST /token, with an Origin or without, answer no Access-Control-* header", async () => {
    const preflight = await fetch(`${sts.url}/token`, {
      method: "OPTIONS",
      headers: {
        origin: ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, dpop",
      },
    });
    assert.equal(preflight.status, 204);
    assert.deepEqual(corsHeaders(preflight.headers), []);

    const grant = { grant_type: "client_credentials", scope: "approvals:request" };
    const fromPage = await postForm(`${sts.url}/token`, grant, {
      origin: ORIGIN,
      authorization: basicAuth("billing-agent", TEST_SECRET),
    });
    assert.equal(fromPage.status, 400, JSON.stringify(fromPage.body));
    assert.deepEqual(fromPage.body, {
      error: "invalid_request",
      error_description: `origin ${ORIGIN} not allowed for client: billing-agent`,
    });
    assert.deepEqual(corsHeaders(fromPage.headers), []);

    const unknownClient = await postForm(`${sts.url}/token`, grant, {
      origin: ORIGIN,
      authorization: basicAuth("nobody", TEST_SECRET),
    });
    assert.equal(unknownClient.status, 401, JSON.stringify(unknownClient.body));
    assert.equal(unknownClient.body.error, "invalid_client");
    assert.deepEqual(corsHeaders(unknownClient.headers), []);

    const noAuth = await postForm(`${sts.url}/token`, grant, { origin: ORIGIN });
    assert.equal(noAuth.status, 400, JSON.stringify(noAuth.body));
    assert.equal(noAuth.body.error, "invalid_request");
    assert.deepEqual(corsHeaders(noAuth.headers), []);

    const agent = await postForm(`${sts.url}/token`, grant, {
      authorization: basicAuth("billing-agent", TEST_SECRET),
    });
    assert.equal(agent.status, 200, JSON.stringify(agent.body));
    assert.deepEqual(corsHeaders(agent.headers), []);

    // Public documents stay readable cross-origin.
    const jwks = await fetch(`${sts.url}/jwks`, { headers: { origin: ORIGIN } });
    assert.equal(jwks.status, 200);
    assert.equal(jwks.headers.get("access-control-allow-origin"), ORIGIN);
  });
});

describe("key-encryption key in the data directory", () => {
  const kekLines = (sts: TestApp) =>
    sts.logs.lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((line) => line.event === "kek.data_dir");

  test("outside dev mode on PGlite: a warning naming COUNTERSIGN_KEK and how to make one, at every start", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-kek-"));
    try {
      const config = { ...baseConfig(), dev_mode: false };
      for (const generated of [true, false]) {
        const sts = await startTestApp({ engine: "pglite", config, dataDir });
        try {
          const file = path.join(dataDir, "kek");
          assert.equal(statSync(file).mode & 0o777, 0o600);
          const lines = kekLines(sts);
          assert.equal(lines.length, 1, sts.logs.text);
          const [line] = lines;
          assert.equal(line?.level, 40);
          assert.equal(line?.reason, "kek_in_data_dir");
          assert.equal(line?.file, file);
          assert.equal(line?.generated, generated);
          assert.equal(line?.msg, dataDirKekAdvice(file));
          assert.match(line?.msg as string, /set COUNTERSIGN_KEK \(32 bytes, base64url\)/);
          assert.match(line?.msg as string, /randomBytes\(32\)\.toString\('base64url'\)/);
          assert.ok(
            !sts.logs.text.includes(readFileSync(file, "utf8").trim()),
            "the key itself is never logged",
          );
        } finally {
          await sts.stop();
        }
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("no warning in dev mode, nor with COUNTERSIGN_KEK set", async () => {
    for (const options of [
      { config: { ...baseConfig(), dev_mode: true } },
      {
        config: { ...baseConfig(), dev_mode: false },
        env: { COUNTERSIGN_KEK: randomBytes(32).toString("base64url") },
      },
    ]) {
      const sts = await startTestApp({ engine: "pglite", ...options });
      try {
        assert.deepEqual(kekLines(sts), []);
      } finally {
        await sts.stop();
      }
    }
  });
});

describe("restarts", () => {
  test("the same signing key (kid) after a restart on the embedded database", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-restart-"));
    try {
      const database = {
        engine: "pglite" as const,
        url: undefined,
        open: async () => {
          const { openDatabase } = await import("../../sts/src/db/connect.js");
          return openDatabase({ url: undefined, dataDir });
        },
        dispose: async () => {},
      };
      const first = await startTestApp({ engine: "pglite", database, dataDir });
      const kid1 = ((await (await fetch(`${first.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys[0]
        ?.kid;
      await first.stop({ keepDataDir: true });
      const second = await startTestApp({ engine: "pglite", database, dataDir });
      const kid2 = ((await (await fetch(`${second.url}/jwks`)).json()) as { keys: { kid: string }[] }).keys[0]
        ?.kid;
      await second.stop({ keepDataDir: true });
      assert.equal(typeof kid1, "string");
      assert.equal(kid2, kid1);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test("two instances started together on real Postgres both come up with one key", {
    skip: !process.env.DATABASE_URL && "DATABASE_URL not set",
  }, async () => {
    const database = await createTestDatabase("postgres");
    const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-pair-"));
    try {
      const [a, b] = await Promise.all([
        startTestApp({ engine: "postgres", database, dataDir }),
        startTestApp({ engine: "postgres", database, dataDir }),
      ]);
      const jwksA = (await (await fetch(`${a.url}/jwks`)).json()) as { keys: { kid: string }[] };
      const jwksB = (await (await fetch(`${b.url}/jwks`)).json()) as { keys: { kid: string }[] };
      assert.equal(jwksA.keys.length, 2);
      assert.deepEqual(jwksB, jwksA);
      const token = await postForm(
        `${a.url}/token`,
        { grant_type: "client_credentials" },
        { authorization: basicAuth("billing-agent", TEST_SECRET) },
      );
      assert.equal(decodeProtectedHeader(token.body.access_token as string).kid, jwksA.keys[0]?.kid);
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await database.dispose();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("CLI", () => {
  const cli = path.join(root, "bin/countersign.js");

  test("a config with three mistakes exits non-zero before listening and names all three", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "countersign-badconfig-"));
    const file = path.join(dir, "config.json");
    writeFileSync(
      file,
      JSON.stringify({
        tokens: { default_ttl_seconds: -5 },
        clients: [
          { client_id: "a", client_secret: "short", token_endpoint_auth_method: "client_secret_basic" },
        ],
        resourcez: [],
      }),
    );
    try {
      await assert.rejects(
        run(process.execPath, [cli, "serve"], {
          env: { ...process.env, COUNTERSIGN_CONFIG: file, PORT: "0", COUNTERSIGN_DATA_DIR: dir },
          timeout: 30_000,
        }),
        (error: { code: number; stderr: string; stdout: string }) => {
          assert.equal(error.code, 78);
          assert.match(error.stderr, /tokens\.default_ttl_seconds: /);
          assert.match(error.stderr, /clients\[0\]\.client_secret: must be at least 32 characters/);
          assert.match(error.stderr, /\(root\): Unrecognized key: "resourcez"/);
          assert.doesNotMatch(error.stdout, /listening/);
          return true;
        },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("invalid environment values are named too", async () => {
    await assert.rejects(
      run(process.execPath, [cli, "migrate"], {
        env: { ...process.env, PORT: "eighty", LOG_LEVEL: "loud", DATABASE_URL: "mysql://x" },
        timeout: 30_000,
      }),
      (error: { code: number; stderr: string }) => {
        assert.equal(error.code, 78);
        assert.match(error.stderr, /env PORT: /);
        assert.match(error.stderr, /env LOG_LEVEL: /);
        assert.match(error.stderr, /env DATABASE_URL: must be a postgres:\/\/ or postgresql:\/\/ URL/);
        return true;
      },
    );
  });

  test("npm run migrate twice: applies, then changes nothing", {
    skip: !process.env.DATABASE_URL && "DATABASE_URL not set",
  }, async () => {
    const database = await createTestDatabase("postgres");
    try {
      const env = { ...process.env, DATABASE_URL: database.url };
      const first = await run(process.execPath, [cli, "migrate"], { env, timeout: 30_000 });
      assert.equal(first.stdout, `migrations applied: ${migrationNames().join(", ")}\n`);
      const second = await run(process.execPath, [cli, "migrate"], { env, timeout: 30_000 });
      assert.equal(second.stdout, "migrations: up to date\n");
    } finally {
      await database.dispose();
    }
  });
});
