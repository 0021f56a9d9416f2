import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { McpGatewayConfigError, mcpGatewayOptionsFromConfig } from "../../gateway-verifier/src/index.js";
import { SessionBindings } from "../../gateway-verifier/src/mcp/sessions.js";

describe("mcp-gateway config file", () => {
  test("snake_case keys become the gateway's options; policy keys sit at the top level; secrets from env", () => {
    const options = mcpGatewayOptionsFromConfig(
      {
        upstream: "http://127.0.0.1:9000/mcp",
        resource: "https://tools.example.test/mcp",
        issuer: "http://127.0.0.1:8080",
        port: 8443,
        default_scopes: ["tools:read"],
        tools: { send_email: ["mail:send"] },
        unlisted: "deny",
        revocation: { url: "http://127.0.0.1:8080/revocations", stream: true },
        rate_limit: { per_second: 5, burst: 10 },
        dpop: { required: true },
        sessions: { max_entries: 100, idle_ttl_seconds: 60, max_per_client: 5 },
        max_body_bytes: 65536,
        max_open_exchanges: 256,
        max_open_exchanges_per_client: 4,
        max_connections: 512,
        upstream_headers_env: { authorization: "UPSTREAM_AUTHORIZATION" },
      },
      { UPSTREAM_AUTHORIZATION: "Bearer upstream-secret" },
    );
    assert.deepEqual(options, {
      upstream: "http://127.0.0.1:9000/mcp",
      resource: "https://tools.example.test/mcp",
      issuer: "http://127.0.0.1:8080",
      port: 8443,
      maxBodyBytes: 65536,
      maxOpenExchanges: 256,
      maxOpenExchangesPerClient: 4,
      maxConnections: 512,
      policy: { default_scopes: ["tools:read"], tools: { send_email: ["mail:send"] }, unlisted: "deny" },
      verifier: {
        rateLimit: { perSecond: 5, burst: 10 },
        revocation: { url: "http://127.0.0.1:8080/revocations", stream: true },
      },
      dpop: { required: true },
      sessions: { maxEntries: 100, idleTtlMs: 60_000, maxPerClient: 5 },
      upstreamHeaders: { authorization: "Bearer upstream-secret" },
    });
  });

  test("every bad key is named; a missing environment variable is an error, and no secret is echoed", () => {
    assert.throws(
      () =>
        mcpGatewayOptionsFromConfig(
          {
            upstream: 7,
            issuer: "",
            prot: 1,
            max_body_bytes: -1,
            dpop: { required: "yes", nonce: true },
            upstream_headers: { "bad header": "x", "x-key": "line\nbreak-secret" },
            upstream_headers_env: { authorization: "NOT_SET" },
          },
          {},
        ),
      (error: unknown) => {
        assert.ok(error instanceof McpGatewayConfigError);
        assert.deepEqual(error.problems, [
          "prot is not a known key",
          "upstream must be a non-empty string",
          "issuer must be a non-empty string",
          "resource is required",
          "max_body_bytes must be an integer ≥ 1",
          "dpop.nonce is not a known key",
          "dpop.required must be true or false",
          "upstream_headers_env.authorization: environment variable NOT_SET is not set",
          'upstream header name "bad header" is invalid',
          "upstream header x-key has an invalid value",
        ]);
        assert.ok(!error.message.includes("secret"));
        return true;
      },
    );
  });
});

describe("session bindings", () => {
  const alice = { clientId: "billing-agent", subject: "alice" };

  test("bound to client and subject; idle TTL slides on use; expired and malformed ids are unknown", () => {
    let now = 0;
    const sessions = new SessionBindings({ idleTtlMs: 1000 }, () => now);
    sessions.bind("s1", alice);
    assert.equal(sessions.check("s1", alice), "ok");
    assert.equal(
      sessions.check("s1", { clientId: "other-agent", subject: "alice" }),
      "session_client_mismatch",
    );
    assert.equal(
      sessions.check("s1", { clientId: "billing-agent", subject: "bob" }),
      "session_subject_mismatch",
    );
    now = 900;
    assert.equal(sessions.check("s1", alice), "ok");
    now = 1800;
    assert.equal(sessions.check("s1", alice), "ok", "the use at 900 extended it to 1900");
    now = 2801;
    assert.equal(sessions.check("s1", alice), "session_not_found");
    assert.equal(sessions.size, 0);
    sessions.bind("bad id", alice);
    assert.equal(sessions.check("bad id", alice), "session_not_found");
    assert.equal(sessions.size, 0);
  });

  test("bounded: past maxEntries the least recently used session is forgotten", () => {
    const sessions = new SessionBindings({ maxEntries: 2 }, () => 0);
    sessions.bind("a", alice);
    sessions.bind("b", alice);
    assert.equal(sessions.check("a", alice), "ok");
    sessions.bind("c", alice);
    assert.equal(sessions.size, 2);
    assert.equal(sessions.check("b", alice), "session_not_found");
    assert.equal(sessions.check("a", alice), "ok");
    assert.equal(sessions.check("c", alice), "ok");
  });

  test("bounded per client: past maxPerClient that client's own least recently used session is forgotten", () => {
    const other = { clientId: "other-agent", subject: "alice" };
    const sessions = new SessionBindings({ maxEntries: 10, maxPerClient: 2 }, () => 0);
    sessions.bind("o1", other);
    sessions.bind("a1", alice);
    sessions.bind("a2", alice);
    assert.equal(sessions.check("a1", alice), "ok", "a1 is now the more recently used");
    sessions.bind("a3", alice);
    assert.equal(sessions.check("a2", alice), "session_not_found");
    for (let i = 4; i < 50; i++) sessions.bind(`a${i}`, alice);
    assert.equal(sessions.sizeOf("billing-agent"), 2);
    assert.equal(sessions.size, 3);
    assert.equal(sessions.check("o1", other), "ok", "another client's session is never evicted by this one");
    assert.equal(sessions.check("a48", alice), "ok");
    assert.equal(sessions.check("a49", alice), "ok");
    sessions.forget("a48");
    sessions.forget("a49");
    assert.equal(sessions.sizeOf("billing-agent"), 0);
    assert.equal(sessions.size, 1);
  });

  test("evicted from the global LRU: the client's list forgets the session too", () => {
    const sessions = new SessionBindings({ maxEntries: 2, maxPerClient: 2 }, () => 0);
    const other = { clientId: "other-agent", subject: "alice" };
    sessions.bind("a1", alice);
    sessions.bind("o1", other);
    sessions.bind("o2", other);
    assert.equal(sessions.check("a1", alice), "session_not_found");
    assert.equal(sessions.sizeOf("billing-agent"), 0);
    sessions.bind("a2", alice);
    sessions.bind("a3", alice);
    assert.equal(sessions.check("a2", alice), "ok");
    assert.equal(sessions.check("a3", alice), "ok");
    assert.equal(sessions.sizeOf("billing-agent"), 2);
    assert.equal(sessions.sizeOf("other-agent"), 0);
  });
});
