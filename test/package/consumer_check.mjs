// A consumer of the published @countersign/gateway-verifier: copied by pack.test.ts into an empty
// project outside the repo (where only the tarball, its dependencies and koa are installed) and run
// there with each Node it tests, so it is plain JavaScript. It verifies a real STS token directly,
// through the Express/connect adapter on a bare node:http server and through the Koa adapter, and
// prints what it saw as one JSON line; the test asserts every value.
import { createServer } from "node:http";
import { connectVerifier, createVerifier, koaVerifier } from "@countersign/gateway-verifier";
import Koa from "koa";

const { ISSUER: issuer, AUDIENCE: audience, TOKEN: token } = process.env;
if (!issuer || !audience || !token) throw new Error("ISSUER, AUDIENCE and TOKEN must be set");

/** Starts `handler` on 127.0.0.1 and returns its base URL and a close function. */
async function serve(handler) {
  const server = createServer(handler);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** GETs `url` with an optional Authorization header; returns status, challenge and JSON body. */
async function get(url, authorization) {
  const response = await fetch(url, authorization === undefined ? {} : { headers: { authorization } });
  return {
    status: response.status,
    challenge: response.headers.get("www-authenticate"),
    body: await response.json(),
  };
}

/** The same four requests against one gateway: token, token without the scope, no token, forged token. */
async function exercise(base) {
  const [header, payload] = token.split(".");
  const forged = `${header}.${payload}.${Buffer.alloc(64).toString("base64url")}`;
  return {
    ok: await get(`${base}/contacts`, `Bearer ${token}`),
    missingScope: await get(`${base}/admin/contacts`, `Bearer ${token}`),
    noToken: await get(`${base}/contacts`),
    forged: await get(`${base}/contacts`, `Bearer ${forged}`),
  };
}

/** crm:read everywhere, crm:delete under /admin. */
const requiredScopes = (_method, path) => (path.startsWith("/admin") ? ["crm:delete"] : ["crm:read"]);

const verifier = createVerifier({
  issuer,
  audience,
  jwksUri: `${issuer}/jwks`,
  revocation: { url: `${issuer}/revocations` },
  rateLimit: false,
});
try {
  await verifier.ready();
  const direct = await verifier.verify({
    authorization: `Bearer ${token}`,
    method: "GET",
    url: `${audience}/contacts`,
    requiredScopes: ["crm:read"],
  });

  const connectMiddleware = connectVerifier(verifier, { requiredScopes, publicOrigin: audience });
  const connectServer = await serve((req, res) =>
    connectMiddleware(req, res, (error) => {
      const body = JSON.stringify(
        error === undefined
          ? { approval_id: req.countersign.approvalId, sub: req.countersign.subject }
          : { error: "next_error" },
      );
      res.writeHead(error === undefined ? 200 : 500, { "content-type": "application/json" });
      res.end(body);
    }),
  );
  const connect = await exercise(connectServer.url).finally(() => connectServer.close());

  const app = new Koa();
  app.use(koaVerifier(verifier, { requiredScopes, publicOrigin: audience }));
  app.use((ctx) => {
    ctx.body = { approval_id: ctx.state.countersign.approvalId, sub: ctx.state.countersign.subject };
  });
  const koaServer = await serve(app.callback());
  const koa = await exercise(koaServer.url).finally(() => koaServer.close());

  const result = {
    node: process.version,
    direct: direct.ok
      ? { ok: true, approvalId: direct.approvalId, subject: direct.subject, clientId: direct.clientId }
      : { ok: false, reason: direct.reason },
    connect,
    koa,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
} finally {
  verifier.close();
}
