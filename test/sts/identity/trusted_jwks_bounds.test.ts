import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, jwtVerify, SignJWT } from "jose";
import {
  createBoundedRemoteJWKSet,
  JwksResponseRefused,
  MAX_JWKS_BYTES,
  MAX_JWKS_KEYS,
} from "../../../sts/src/identity/remote_jwks.js";
import { createLogger } from "../../../sts/src/ops/logger.js";
import { baseConfig, LogCapture, startTestApp, type TestApp } from "../../helpers/app.js";
import { agentTask, exchange, insertApproval } from "../../helpers/exchange.js";

const ISSUER = "https://idp.example.test";
const AUDIENCE = "countersign";
/** A string no log line may contain: it pads the oversized JWKS bodies. */
const PAD_MARKER = "PADDING-NEVER-LOGGED";

type Body = "good" | "too_large" | "too_many_keys" | "not_json" | "endless";

/** A JWKS server on 127.0.0.1 whose answer the test switches; it counts fetches and bytes written. */
async function startJwksServer(key: JWK) {
  let body: Body = "good";
  let fetches = 0;
  let endlessWritten = 0;
  let endlessClosed: Promise<void> = Promise.resolve();
  const other = (i: number): JWK => ({ ...key, kid: `other-${i}` });
  const texts: Record<Exclude<Body, "endless">, string> = {
    good: JSON.stringify({ keys: [key] }),
    // A valid key set holding the right key, one byte over the cap.
    too_large: (() => {
      const base = JSON.stringify({ keys: [key], pad: "" });
      const pad = PAD_MARKER.repeat(Math.ceil(MAX_JWKS_BYTES / PAD_MARKER.length));
      return JSON.stringify({ keys: [key], pad: pad.slice(0, MAX_JWKS_BYTES - base.length + 1) });
    })(),
    too_many_keys: JSON.stringify({
      keys: [key, ...Array.from({ length: MAX_JWKS_KEYS }, (_, i) => other(i))],
    }),
    not_json: `{"keys": [${PAD_MARKER}`,
  };
  const handler = (_request: IncomingMessage, response: ServerResponse) => {
    fetches += 1;
    if (body !== "endless") {
      const text = texts[body];
      response.writeHead(200, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
      });
      response.end(text);
      return;
    }
    // Chunked, no Content-Length: up to 64 MiB, written only as fast as the client reads.
    response.writeHead(200, { "content-type": "application/json" });
    const chunk = Buffer.alloc(64 * 1024, "a");
    endlessWritten = 0;
    endlessClosed = new Promise<void>((resolve) => response.on("close", resolve));
    const pump = () => {
      while (endlessWritten < 64 * 1024 * 1024 && !response.destroyed) {
        endlessWritten += chunk.length;
        if (!response.write(chunk)) {
          response.once("drain", pump);
          return;
        }
      }
      response.end();
    };
    response.write('{"keys": [], "pad": "');
    pump();
  };
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    get fetches() {
      return fetches;
    },
    get endlessWritten() {
      return endlessWritten;
    },
    endlessClosed: () => endlessClosed,
    serve(next: Body) {
      body = next;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function issuerKey(): Promise<{ privateKey: CryptoKey; jwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  return { privateKey, jwk: { ...(await exportJWK(publicKey)), kid: "idp-1", alg: "ES256" } };
}

function identityToken(privateKey: CryptoKey, sub = "alice"): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", kid: "idp-1" })
    .setIssuer(ISSUER)
    .setSubject(sub)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(privateKey);
}

function jwksLines(logs: LogCapture): Record<string, unknown>[] {
  return logs.lines
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.event === "jwks.refused");
}

describe("trusted issuer JWKS: a body over 1 MiB or over 100 keys is refused", () => {
  let server: Awaited<ReturnType<typeof startJwksServer>>;
  let privateKey: CryptoKey;

  before(async () => {
    const key = await issuerKey();
    privateKey = key.privateKey;
    server = await startJwksServer(key.jwk);
  });
  after(() => server.stop());

  test("through the exchange: 503 temporarily_unavailable, logged with its reason, no body", async () => {
    const sts: TestApp = await startTestApp({
      engine: "pglite",
      config: {
        ...baseConfig(),
        trusted_issuers: [{ issuer: ISSUER, jwks_uri: server.url, audience: AUDIENCE, usage: ["subject"] }],
      },
    });
    try {
      const approvalId = await insertApproval(sts.app.services.db, { subject: "alice" });
      const subjectToken = await identityToken(privateKey);
      for (const [body, reason] of [
        ["too_large", "jwks_too_large"],
        ["too_many_keys", "jwks_too_many_keys"],
      ] as const) {
        server.serve(body);
        const fetches = server.fetches;
        const answer = await exchange(sts.url, {
          subject_token: subjectToken,
          authorization_details: agentTask(approvalId),
        });
        assert.equal(answer.status, 503, JSON.stringify(answer.body));
        assert.deepEqual(answer.body, {
          error: "temporarily_unavailable",
          error_description: "the subject token's issuer keys could not be fetched",
        });
        assert.equal(server.fetches, fetches + 1);
        const refused = jwksLines(sts.logs).at(-1);
        assert.ok(refused, body);
        assert.equal(refused.level, 40);
        assert.equal(refused.reason, reason);
        assert.equal(refused.jwks_uri, server.url);
        assert.equal(refused.previous_keys_kept, false);
        const exchangeLine = sts.logs.lines
          .map((line) => JSON.parse(line) as Record<string, unknown>)
          .filter((line) => line.msg === "token exchange refused")
          .at(-1);
        assert.equal(exchangeLine?.reason, "subject_token_issuer_keys_unavailable");
      }
      assert.equal(jwksLines(sts.logs).length, 2);
      assert.ok(!sts.logs.text.includes(PAD_MARKER));
      assert.ok(!sts.logs.text.includes("other-0"));

      // The same issuer answering within bounds: the exchange goes through.
      server.serve("good");
      const granted = await exchange(sts.url, {
        subject_token: subjectToken,
        authorization_details: agentTask(approvalId),
      });
      assert.equal(granted.status, 200, JSON.stringify(granted.body));
    } finally {
      await sts.stop();
    }
  });

  test("after a good fetch, refused refetches keep the previous keys in use (logged, no body)", async () => {
    const logs = new LogCapture();
    // Cache age 0: every verification refetches, so each served body is really read.
    const keys = createBoundedRemoteJWKSet(new URL(server.url), {
      cacheMaxAge: 0,
      cooldownDuration: 0,
      timeoutDuration: 5000,
      logger: createLogger("info", logs),
    });
    const verify = async () =>
      (await jwtVerify(await identityToken(privateKey, "bob"), keys, { issuer: ISSUER, audience: AUDIENCE }))
        .payload.sub;

    server.serve("too_large");
    await assert.rejects(verify(), (error: unknown) => {
      assert.ok(error instanceof JwksResponseRefused);
      assert.equal(error.reason, "jwks_too_large");
      return true;
    });
    assert.deepEqual(
      jwksLines(logs).map((line) => [line.reason, line.previous_keys_kept]),
      [["jwks_too_large", false]],
    );

    server.serve("good");
    assert.equal(await verify(), "bob");

    for (const body of ["too_large", "too_many_keys", "not_json"] as const) {
      server.serve(body);
      const fetches = server.fetches;
      assert.equal(await verify(), "bob", body);
      assert.equal(server.fetches, fetches + 1, body);
    }
    assert.deepEqual(
      jwksLines(logs).map((line) => [line.reason, line.previous_keys_kept]),
      [
        ["jwks_too_large", false],
        ["jwks_too_large", true],
        ["jwks_too_many_keys", true],
        ["jwks_invalid", true],
      ],
    );
    assert.ok(jwksLines(logs).every((line) => line.level === 40 && line.jwks_uri === server.url));
    assert.ok(!logs.text.includes(PAD_MARKER));
    assert.ok(!logs.text.includes("other-0"));
  });

  test("an endless chunked body is dropped past 1 MiB, not read to its end", async () => {
    const logs = new LogCapture();
    const keys = createBoundedRemoteJWKSet(new URL(server.url), {
      cacheMaxAge: 0,
      timeoutDuration: 30_000,
      logger: createLogger("info", logs),
    });
    server.serve("endless");
    await assert.rejects(
      jwtVerify(await identityToken(privateKey), keys, { issuer: ISSUER, audience: AUDIENCE }),
      (error: unknown) => error instanceof JwksResponseRefused && error.reason === "jwks_too_large",
    );
    // The client dropped the connection: the server stopped long before its 64 MiB.
    await server.endlessClosed();
    assert.ok(server.endlessWritten < 16 * 1024 * 1024, String(server.endlessWritten));
    assert.deepEqual(
      jwksLines(logs).map((line) => line.reason),
      ["jwks_too_large"],
    );
  });
});
