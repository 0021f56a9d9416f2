import assert from "node:assert/strict";
import type { Server } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import Koa from "koa";
import * as oauth from "openid-client";
import {
  type KoaMiddlewareOptions,
  koaVerifier,
  REASONS,
  type Verifier,
  type VerifyResult,
  type VerifySuccess,
} from "../../gateway-verifier/src/index.js";
import { startTestApp, TEST_SECRET, type TestApp } from "../helpers/app.js";
import { agentTask, insertApproval, JWT_TOKEN_TYPE, TOKEN_EXCHANGE } from "../helpers/exchange.js";
import { AUDIENCE, createVerifier } from "./helpers.js";

/** The `WWW-Authenticate` of a refused DPoP proof (RFC 9449 §7.1). */
const HTU_CHALLENGE = `DPoP error="invalid_dpop_proof", error_description="${REASONS.dpop_htu_mismatch.description}", algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"`;

/** A Koa app with `koaVerifier` on 127.0.0.1; `origin` is the address clients reach it at. */
interface KoaGateway {
  origin: string;
  app: Koa;
  close(): Promise<void>;
}

/**
 * Starts the server first (its port is part of the URL some tests configure), then mounts the app
 * built for that origin.
 */
async function startKoaGateway(
  verifier: Verifier,
  options: (origin: string) => KoaMiddlewareOptions,
  proxy = false,
): Promise<KoaGateway> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const app = new Koa({ proxy });
  app.use(koaVerifier(verifier, { requiredScopes: ["crm:read"], ...options(origin) }));
  app.use((ctx) => {
    const result = ctx.state.countersign as VerifySuccess;
    ctx.body = { approval: result.approvalId, subject: result.subject };
  });
  server.on("request", app.callback());
  return {
    origin,
    app,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe("Koa middleware: DPoP with a real STS and a real client (openid-client)", () => {
  let sts: TestApp;
  let config: oauth.Configuration;
  let dpop: oauth.DPoPHandle;
  let token: string;
  let approvalId: string;
  let verifier: Verifier;
  /** Every result the verifier gave, so a refusal's reason code can be asserted. */
  const results: VerifyResult[] = [];
  /**
   * Where the client's requests really go, by the origin it addresses: a TLS-terminating proxy or a
   * name that resolves to this gateway, without DNS or certificates.
   */
  const routes = new Map<string, string>();

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    approvalId = await insertApproval(sts.handle.db, { scope: "crm:read" });
    config = await oauth.discovery(
      new URL(sts.url),
      "billing-agent",
      undefined,
      oauth.ClientSecretBasic(TEST_SECRET),
      { execute: [oauth.allowInsecureRequests] },
    );
    config[oauth.customFetch] = (url, options) => {
      const target = new URL(url);
      const routed = routes.get(target.origin);
      return fetch(routed === undefined ? url : `${routed}${target.pathname}${target.search}`, options);
    };
    dpop = oauth.getDPoPHandle(config, await oauth.randomDPoPKeyPair("ES256"));
    const minted = await oauth.genericGrantRequest(
      config,
      TOKEN_EXCHANGE,
      {
        subject_token: await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" }),
        subject_token_type: JWT_TOKEN_TYPE,
        resource: AUDIENCE,
        authorization_details: agentTask(approvalId),
      },
      { DPoP: dpop },
    );
    assert.equal(minted.token_type, "dpop");
    token = minted.access_token;
    const real = createVerifier({
      issuer: sts.url,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      rateLimit: false,
    });
    verifier = {
      verify: async (request) => {
        const result = await real.verify(request);
        results.push(result);
        return result;
      },
      ready: () => real.ready(),
      close: () => real.close(),
    };
  });
  after(async () => {
    verifier.close();
    await sts.stop();
  });

  /** GET `url` as openid-client does: `Authorization: DPoP …` and a fresh proof for `url`. */
  async function get(url: string, headers: Record<string, string> = {}) {
    try {
      return await oauth.fetchProtectedResource(
        config,
        token,
        new URL(url),
        "GET",
        undefined,
        new Headers(headers),
        {
          DPoP: dpop,
        },
      );
    } catch (error) {
      if (error instanceof oauth.WWWAuthenticateChallengeError) return error.response;
      throw error;
    }
  }

  async function assertAllowed(response: Response) {
    assert.equal(response.status, 200, await response.clone().text());
    assert.deepEqual(await response.json(), { approval: approvalId, subject: "alice" });
    assert.equal(results.at(-1)?.ok, true);
  }

  async function assertHtuMismatch(response: Response) {
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("www-authenticate"), HTU_CHALLENGE);
    assert.deepEqual(await response.json(), {
      error: "invalid_dpop_proof",
      error_description: REASONS.dpop_htu_mismatch.description,
    });
    const last = results.at(-1);
    assert.equal(last?.ok, false);
    if (last?.ok === false) {
      assert.equal(last.status, 401);
      assert.equal(last.error, "invalid_dpop_proof");
      assert.equal(last.reason, "dpop_htu_mismatch");
    }
  }

  test("without publicOrigin: htu is the connection's scheme and the Host header, and the client gets through", async () => {
    const gateway = await startKoaGateway(verifier, () => ({}));
    try {
      await assertAllowed(await get(`${gateway.origin}/contacts?page=2`));
    } finally {
      await gateway.close();
    }
  });

  test("with publicOrigin behind a TLS-terminating proxy: htu is the public URL, not the Host the proxy sends", async () => {
    const gateway = await startKoaGateway(verifier, () => ({ publicOrigin: `${AUDIENCE}/` }));
    routes.set(AUDIENCE, gateway.origin);
    try {
      await assertAllowed(await get(`${AUDIENCE}/contacts`));
      // The configured origin wins: a proof for the address behind the proxy is for another URL.
      await assertHtuMismatch(await get(`${gateway.origin}/contacts`));
    } finally {
      routes.delete(AUDIENCE);
      await gateway.close();
    }
  });

  test("X-Forwarded-Proto counts only when app.proxy is set", async () => {
    const direct = await startKoaGateway(verifier, () => ({}));
    const proxied = await startKoaGateway(verifier, () => ({}), true);
    const https = (origin: string) => origin.replace(/^http:/, "https:");
    routes.set(https(direct.origin), direct.origin);
    routes.set(https(proxied.origin), proxied.origin);
    try {
      const forwarded = { "x-forwarded-proto": "https" };
      await assertAllowed(await get(`${https(proxied.origin)}/contacts`, forwarded));
      await assertHtuMismatch(await get(`${https(direct.origin)}/contacts`, forwarded));
      await assertAllowed(await get(`${direct.origin}/contacts`, forwarded));
    } finally {
      routes.clear();
      await direct.close();
      await proxied.close();
    }
  });

  for (const publicOrigin of [false, true]) {
    test(`a forged Origin header chooses nothing (${publicOrigin ? "with" : "without"} publicOrigin)`, async () => {
      const gateway = await startKoaGateway(verifier, (origin) =>
        publicOrigin ? { publicOrigin: origin } : {},
      );
      const forged = "https://other.example.test";
      const third = "https://third.example.test";
      routes.set(forged, gateway.origin);
      routes.set(third, gateway.origin);
      try {
        // A proof made for the forged origin, sent with that Origin: refused.
        await assertHtuMismatch(await get(`${forged}/contacts`, { origin: forged }));
        // A proof for yet another host, with the forged Origin: refused.
        await assertHtuMismatch(await get(`${third}/contacts`, { origin: forged }));
        // A proof for this gateway's URL: the Origin header is ignored.
        await assertAllowed(await get(`${gateway.origin}/contacts`, { origin: forged }));
      } finally {
        routes.clear();
        await gateway.close();
      }
    });
  }
});
