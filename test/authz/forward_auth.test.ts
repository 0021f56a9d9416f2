import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { before, describe, test } from "node:test";
import {
  canonicalPath,
  ForwardAuthConfigError,
  type ForwardAuthDecision,
  type ForwardAuthServerOptions,
  forwardAuthOptionsFromConfig,
  startForwardAuthServer,
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
  NOW_MS,
  type SigningKey,
} from "../gateway-verifier/helpers.js";
import { countersign } from "../helpers/processes.js";

let key: SigningKey;
before(async () => {
  key = await generateSigningKey();
});

/** Runs the service with `options`, calls `run` with its origin and the decisions, then stops it. */
async function withService(
  options: ForwardAuthServerOptions,
  run: (origin: string, decisions: ForwardAuthDecision[]) => Promise<void>,
) {
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    now: () => NOW_MS,
    rateLimit: false,
  });
  const decisions: ForwardAuthDecision[] = [];
  const { server } = await startForwardAuthServer(verifier, {
    ...options,
    onDecision: (d) => decisions.push(d),
  });
  try {
    await run(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, decisions);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    verifier.close();
  }
}

const ROUTES = [{ pathPrefix: "/admin", scopes: ["crm:delete"] }];

describe("without --trust-forwarded-headers (Envoy ext_authz)", () => {
  test("the request line is the original request (after path_prefix); 200 carries the identity headers", async () => {
    await withService({ pathPrefix: "/authz", routes: ROUTES }, async (origin, decisions) => {
      const token = await mintToken(key);
      const allowed = await fetch(`${origin}/authz/contacts?x=1`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(allowed.status, 200);
      assert.equal(allowed.headers.get("x-countersign-client-id"), "billing-agent");
      assert.equal(allowed.headers.get("x-countersign-subject"), "alice");
      assert.equal(allowed.headers.get("x-countersign-approval-id"), "appr_123");
      assert.equal(allowed.headers.get("x-countersign-scope"), "crm:read crm:write");
      const admin = await fetch(`${origin}/authz/admin/x`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(admin.status, 403);
      assert.equal(admin.headers.get("x-countersign-error"), "insufficient_scope");
      assert.deepEqual(
        decisions.map((d) => [d.outcome, d.reason, d.path]),
        [
          ["allow", undefined, "/contacts"],
          ["refuse", "insufficient_scope", "/admin/x"],
        ],
      );
    });
  });

  test("a proxy's X-Original-URI or X-Forwarded-Uri is refused: 500 forwarded_headers_untrusted", async () => {
    await withService({}, async (origin, decisions) => {
      const token = await mintToken(key);
      for (const header of ["x-original-uri", "x-forwarded-uri", "x-original-method", "x-forwarded-method"]) {
        const answer = await fetch(`${origin}/`, {
          headers: { authorization: `Bearer ${token}`, [header]: "GET" },
        });
        assert.equal(answer.status, 500, header);
        assert.deepEqual(await answer.json(), {
          error: "server_error",
          error_description: "The authorization service is misconfigured",
        });
      }
      assert.deepEqual(
        decisions.map((d) => d.reason),
        Array(4).fill("forwarded_headers_untrusted"),
      );
    });
  });
});

describe("with --trust-forwarded-headers (nginx, Caddy, Traefik)", () => {
  test("no original method or URI: 500 original_request_missing (never the subrequest's own line)", async () => {
    await withService({ trustForwardedHeaders: true }, async (origin, decisions) => {
      const token = await mintToken(key);
      const answer = await fetch(`${origin}/`, {
        headers: { authorization: `Bearer ${token}`, "x-original-uri": "/contacts" },
      });
      assert.equal(answer.status, 500);
      assert.equal(decisions[0]?.reason, "original_request_missing");
    });
  });

  test("both families disagreeing (a client added one): 400 original_request_ambiguous", async () => {
    await withService({ trustForwardedHeaders: true, routes: ROUTES }, async (origin, decisions) => {
      const token = await mintToken(key);
      const answer = await fetch(`${origin}/`, {
        headers: {
          authorization: `Bearer ${token}`,
          "x-original-method": "GET",
          "x-original-uri": "/admin",
          "x-forwarded-method": "GET",
          "x-forwarded-uri": "/contacts",
        },
      });
      assert.equal(answer.status, 400);
      assert.deepEqual(await answer.json(), {
        error: "invalid_request",
        error_description: "The original request is ambiguous",
      });
      assert.equal(decisions[0]?.reason, "original_request_ambiguous");
    });
  });

  test("a path climbing above the root or a bad method: 400 original_request_invalid", async () => {
    await withService({ trustForwardedHeaders: true }, async (origin, decisions) => {
      const token = await mintToken(key);
      for (const [method, uri] of [
        ["GET", "/../admin"],
        ["GET", "/%zz"],
        ["GET", "/a%00b"],
        ["GET", "http://other/admin"],
        ["GE T", "/contacts"],
      ]) {
        const answer = await fetch(`${origin}/`, {
          headers: {
            authorization: `Bearer ${token}`,
            "x-forwarded-method": method!,
            "x-forwarded-uri": uri!,
          },
        });
        assert.equal(answer.status, 400, `${method} ${uri}`);
      }
      assert.deepEqual(
        decisions.map((d) => d.reason),
        Array(5).fill("original_request_invalid"),
      );
    });
  });

  test("DPoP htm and htu come from the forwarded method, URI, proto and host; public_origin overrides them", async () => {
    const dpopKey = await generateDpopKey();
    const token = await mintToken(key, accessTokenClaims(undefined, { cnf: { jkt: dpopKey.jkt } }));
    const forwarded = async (origin: string, htu: string) =>
      fetch(`${origin}/`, {
        headers: {
          authorization: `DPoP ${token}`,
          dpop: await dpopProof(dpopKey, token, { htm: "POST", htu }),
          "x-forwarded-method": "POST",
          "x-forwarded-uri": "/contacts?page=2",
          "x-forwarded-proto": "https",
          "x-forwarded-host": "crm.example.test",
        },
      });
    await withService({ trustForwardedHeaders: true }, async (origin) => {
      assert.equal((await forwarded(origin, "https://crm.example.test/contacts")).status, 200);
      const wrong = await forwarded(origin, "https://crm.example.test/admin");
      assert.equal(wrong.status, 401);
      assert.equal(wrong.headers.get("x-countersign-error"), "invalid_dpop_proof");
    });
    await withService(
      { trustForwardedHeaders: true, publicOrigin: "https://api.example.test" },
      async (origin) => {
        assert.equal((await forwarded(origin, "https://crm.example.test/contacts")).status, 401);
        assert.equal((await forwarded(origin, "https://api.example.test/contacts")).status, 200);
      },
    );
  });
});

describe("canonicalPath (what routes match on)", () => {
  test("decodes once, merges slashes, resolves dot segments; refuses what climbs above the root", () => {
    const cases: [string, string | undefined][] = [
      ["/contacts", "/contacts"],
      ["/x/../admin", "/admin"],
      ["//admin//users", "/admin/users"],
      ["/%61dmin", "/admin"],
      ["/public/..%2Fadmin", "/admin"],
      ["/a/./b/", "/a/b/"],
      ["/a/b/..", "/a/"],
      ["/%252e%252e/admin", "/%2e%2e/admin"],
      ["/..", undefined],
      ["/%", undefined],
      ["/a%0ab", undefined],
      ["contacts", undefined],
      ["*", undefined],
    ];
    for (const [raw, expected] of cases) assert.equal(canonicalPath(raw), expected, raw);
  });
});

describe("authz-server configuration", () => {
  test("forwardAuthOptionsFromConfig names every bad key", () => {
    assert.throws(
      () =>
        forwardAuthOptionsFromConfig({
          issuer: "ftp://x",
          routes: [{ method: "GET", path_prefix: "contacts", scopes: ["a b"], extra: 1 }],
          public_origin: "https://x.test/path",
          unknown: true,
        }),
      (error: unknown) =>
        error instanceof ForwardAuthConfigError &&
        assert.deepEqual(error.problems, [
          "unknown is not a known key",
          "issuer must be an http(s) URL",
          "audience is required (--audience)",
          "public_origin must be an http(s) origin, e.g. https://crm.example.test",
          "routes[0].extra is not a known key",
          "routes[0].path_prefix must be a decoded path starting with / (no ?, # or %)",
          "routes[0].scopes must be an array of at most 100 scope tokens",
        ]) === undefined,
    );
  });

  test("countersign authz-server exits 78 on an invalid configuration, before listening", async () => {
    const run = await countersign([
      "authz-server",
      "--issuer",
      "http://127.0.0.1:1",
      "--public-origin",
      "nope",
    ]);
    assert.equal(run.code, 78);
    assert.equal(
      run.stderr,
      "countersign: invalid authz-server config: audience is required (--audience); " +
        "public_origin must be an http(s) origin, e.g. https://crm.example.test\n",
    );
  });
});
