import assert from "node:assert/strict";
import { createServer, type IncomingMessage, request, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import Koa from "koa";
import {
  connectVerifier,
  koaVerifier,
  startExtAuthzServer,
  type Verifier,
  type VerifySuccess,
} from "../../gateway-verifier/src/index.js";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  dpopProof,
  generateDpopKey,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  type SigningKey,
} from "./helpers.js";

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A raw HTTP/1.1 request (fetch cannot set Host), as Envoy or a client would send it. */
function send(port: number, path: string, headers: Record<string, string>, method = "GET"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

const close = (server: import("node:http").Server) =>
  new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });

describe("adapters over real HTTP", () => {
  let key: SigningKey;
  let verifier: Verifier;

  before(async () => {
    key = await generateSigningKey("key-1");
    verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      now: () => NOW_MS,
      rateLimit: { perSecond: 1, burst: 2 },
    });
    await verifier.ready();
  });
  after(() => verifier.close());

  const token = (claims: Record<string, unknown> = {}) => mintToken(key, accessTokenClaims(NOW, claims));

  test("Koa middleware: allows, refuses with challenge and JSON, 403, 429, DPoP htu from publicOrigin", async () => {
    const app = new Koa();
    app.use(koaVerifier(verifier, { requiredScopes: ["crm:read"], publicOrigin: AUDIENCE }));
    app.use((ctx) => {
      const result = ctx.state.countersign as VerifySuccess;
      ctx.body = { client: result.clientId, approval: result.approvalId };
    });
    const { server, port } = await listen(app.callback());
    try {
      const ok = await send(port, "/contacts", {
        authorization: `Bearer ${await token({ approval_id: "k1" })}`,
      });
      assert.equal(ok.status, 200);
      assert.deepEqual(JSON.parse(ok.body), { client: "billing-agent", approval: "k1" });

      const none = await send(port, "/contacts", {});
      assert.equal(none.status, 401);
      assert.equal(
        none.headers["www-authenticate"],
        `Bearer, DPoP algs="ES256 ES384 EdDSA Ed25519 PS256 RS256"`,
      );
      assert.deepEqual(JSON.parse(none.body), {
        error: "invalid_token",
        error_description: "An access token is required",
      });

      const narrow = await send(port, "/contacts", {
        authorization: `Bearer ${await token({ scope: "crm:write", approval_id: "k2" })}`,
      });
      assert.equal(narrow.status, 403);
      assert.match(String(narrow.headers["www-authenticate"]), /^Bearer error="insufficient_scope"/);

      const burst = `Bearer ${await token({ approval_id: "k3" })}`;
      assert.equal((await send(port, "/contacts", { authorization: burst })).status, 200);
      assert.equal((await send(port, "/contacts", { authorization: burst })).status, 200);
      const limited = await send(port, "/contacts", { authorization: burst });
      assert.equal(limited.status, 429);
      assert.equal(limited.headers["retry-after"], "1");
      assert.equal(JSON.parse(limited.body).error, "rate_limited");

      const holder = await generateDpopKey();
      const bound = await token({ cnf: { jkt: holder.jkt }, approval_id: "k4" });
      const proof = await dpopProof(holder, bound, { htu: `${AUDIENCE}/contacts` });
      const dpopOk = await send(port, "/contacts?page=1", { authorization: `DPoP ${bound}`, dpop: proof });
      assert.equal(dpopOk.status, 200);
      const replay = await send(port, "/contacts", { authorization: `DPoP ${bound}`, dpop: proof });
      assert.equal(replay.status, 401);
      assert.match(String(replay.headers["www-authenticate"]), /^DPoP error="invalid_dpop_proof"/);
    } finally {
      await close(server);
    }
  });

  test("Express/connect middleware: next() on success with req.countersign, refusals answered", async () => {
    const chain = [
      connectVerifier(verifier, {
        requiredScopes: (method) => (method === "GET" ? ["crm:read"] : ["crm:write"]),
        trustProxy: true,
      }),
      (req: IncomingMessage & { countersign?: VerifySuccess }, res: ServerResponse) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ subject: req.countersign?.subject }));
      },
    ];
    const { server, port } = await listen((req, res) => {
      let index = 0;
      const next = (error?: unknown) => {
        if (error !== undefined) {
          res.statusCode = 500;
          res.end();
          return;
        }
        const handler = chain[index++];
        handler?.(req, res, next);
      };
      next();
    });
    try {
      const ok = await send(port, "/contacts", {
        authorization: `Bearer ${await token({ approval_id: "c1" })}`,
      });
      assert.equal(ok.status, 200);
      assert.deepEqual(JSON.parse(ok.body), { subject: "alice" });

      const post = await send(
        port,
        "/contacts",
        { authorization: `Bearer ${await token({ scope: "crm:read", approval_id: "c2" })}` },
        "POST",
      );
      assert.equal(post.status, 403);
      assert.deepEqual(JSON.parse(post.body), {
        error: "insufficient_scope",
        error_description: "The token lacks a scope this request requires",
      });

      const expired = await send(port, "/contacts", {
        authorization: `Bearer ${await mintToken(key, accessTokenClaims(NOW - 400, { exp: NOW - 100 }))}`,
      });
      assert.equal(expired.status, 401);
      assert.equal(
        expired.headers["www-authenticate"],
        'Bearer error="invalid_token", error_description="The token has expired"',
      );
      assert.equal(expired.headers["cache-control"], "no-store");

      // htu is rebuilt from X-Forwarded-Proto (trustProxy) and Host.
      const holder = await generateDpopKey();
      const bound = await token({ cnf: { jkt: holder.jkt }, approval_id: "c3" });
      const proof = await dpopProof(holder, bound, { htu: "https://crm.example.test/contacts" });
      const dpop = await send(port, "/contacts", {
        authorization: `DPoP ${bound}`,
        dpop: proof,
        host: "crm.example.test",
        "x-forwarded-proto": "https",
      });
      assert.equal(dpop.status, 200);
    } finally {
      await close(server);
    }
  });

  test("Envoy ext_authz HTTP service: 200 with identity headers, denials passed through", async () => {
    const { server, port } = await startExtAuthzServer(verifier, {
      pathPrefix: "/authz",
      requiredScopes: (_method, path) => (path.startsWith("/admin") ? ["crm:admin"] : ["crm:read"]),
    });
    try {
      const allowed = await send(port, "/authz/contacts?x=1", {
        authorization: `Bearer ${await token({ approval_id: "e1" })}`,
        host: "crm.example.test",
        "x-forwarded-proto": "https",
      });
      assert.equal(allowed.status, 200);
      assert.equal(allowed.headers["x-countersign-client-id"], "billing-agent");
      assert.equal(allowed.headers["x-countersign-approval-id"], "e1");
      assert.equal(allowed.headers["x-countersign-subject"], "alice");
      assert.equal(allowed.headers["x-countersign-scope"], "crm:read crm:write");

      const admin = await send(port, "/authz/admin/users", {
        authorization: `Bearer ${await token({ approval_id: "e2" })}`,
      });
      assert.equal(admin.status, 403);
      assert.equal(
        admin.headers["www-authenticate"],
        'Bearer error="insufficient_scope", error_description="The token lacks a scope this request requires", scope="crm:admin"',
      );

      const missing = await send(port, "/authz/contacts", {});
      assert.equal(missing.status, 401);
      assert.equal(missing.headers["x-countersign-client-id"], undefined);

      const burst = `Bearer ${await token({ approval_id: "e3" })}`;
      await send(port, "/authz/contacts", { authorization: burst });
      await send(port, "/authz/contacts", { authorization: burst });
      const limited = await send(port, "/authz/contacts", { authorization: burst });
      assert.equal(limited.status, 429);
      assert.equal(limited.headers["retry-after"], "1");

      const holder = await generateDpopKey();
      const bound = await token({ cnf: { jkt: holder.jkt }, approval_id: "e4" });
      const proof = await dpopProof(holder, bound, { htm: "POST", htu: "https://crm.example.test/contacts" });
      const dpop = await send(
        port,
        "/authz/contacts",
        {
          authorization: `DPoP ${bound}`,
          dpop: proof,
          host: "crm.example.test",
          "x-forwarded-proto": "https",
        },
        "POST",
      );
      assert.equal(dpop.status, 200);
    } finally {
      await close(server);
    }
  });
});
