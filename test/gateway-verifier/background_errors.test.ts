import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type Verifier,
  VerifierBackgroundError,
  type VerifierBackgroundErrorCode,
  type VerifierOptions,
} from "../../gateway-verifier/src/index.js";
import { freePort, startTestApp, type TestApp } from "../helpers/app.js";
import { agentTask, exchange, insertApproval } from "../helpers/exchange.js";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW_MS,
  sendJson,
  startFakeSts,
  startServer,
} from "./helpers.js";

/**
 * What goes wrong in the verifier's background (JWKS fetches, the revocation feed) reaches `onError`
 * as a VerifierBackgroundError with a stable code, source and reason; `ready()` resolves once the keys
 * and the feed were loaded and rejects (not_ready) when the STS cannot be reached in time; a hook that
 * throws changes nothing; a verifier without revocation says so exactly once.
 *
 * Adversary: a careless operator (no revocation feed, an STS address with nothing behind it, a hook
 * that throws) and an STS that is down or answers garbage.
 */

/** Background errors as a hook receives them, with a way to wait (event-driven) for one. */
function collector() {
  const errors: VerifierBackgroundError[] = [];
  const waiters: { match: (e: VerifierBackgroundError) => boolean; resolve: () => void }[] = [];
  return {
    errors,
    onError(error: VerifierBackgroundError) {
      errors.push(error);
      for (const waiter of waiters.filter((w) => w.match(error))) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    },
    /**
     * Resolves when an error matching `match` has been (or is) reported. The verifier's background
     * timers do not hold the process open, so this does while it waits.
     */
    reported(match: (error: VerifierBackgroundError) => boolean): Promise<void> {
      if (errors.some(match)) return Promise.resolve();
      const alive = setInterval(() => undefined, 1_000);
      return new Promise<void>((resolve) => waiters.push({ match, resolve })).finally(() =>
        clearInterval(alive),
      );
    },
    codes: () => errors.map((e) => `${e.source}/${e.code}/${e.reason}`),
  };
}

/** Lets every queued tick, microtask and immediate run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

/** The stable parts of a background error. */
const shape = (error: VerifierBackgroundError) => ({
  name: error.name,
  code: error.code,
  source: error.source,
  reason: error.reason,
  status: error.status,
});

const REVOCATION_WARNING = "COUNTERSIGN_REVOCATION_NOT_CONFIGURED";

// First in this file: the process-wide warning fires once per process, so no verifier without
// `revocation` and without `onError` may be created before this test.
test("without onError, a verifier without revocation warns once per process (process.emitWarning)", async () => {
  const key = await generateSigningKey();
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on("warning", onWarning);
  const options: VerifierOptions = { issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [key.publicJwk] } };
  const first = createVerifier(options);
  const second = createVerifier(options);
  try {
    await first.ready();
    await second.ready();
    assert.equal((await first.verify({ authorization: `Bearer ${await mintToken(key)}` })).ok, false);
    await settle();
    const ours = warnings.filter((w) => (w as Error & { code?: string }).code === REVOCATION_WARNING);
    assert.equal(ours.length, 1);
    assert.equal(ours[0]?.name, "CountersignWarning");
    assert.match(ours[0]?.message ?? "", /revocation is not configured.*`revocation: false`/);
  } finally {
    process.off("warning", onWarning);
    first.close();
    second.close();
  }
});

test("with onError, a verifier without revocation says so exactly once, through onError", async () => {
  const key = await generateSigningKey();
  const sts = await startFakeSts([key.publicJwk]);
  const unset = collector();
  const off = collector();
  const configured = collector();
  const base = { issuer: ISSUER, audience: AUDIENCE, jwks: { keys: [key.publicJwk] }, now: () => NOW_MS };
  const verifiers = [
    createVerifier({ ...base, onError: unset.onError }),
    createVerifier({ ...base, revocation: false, onError: off.onError }),
    createVerifier({ ...base, revocation: { url: `${sts.url}/revocations` }, onError: configured.onError }),
  ];
  try {
    for (const verifier of verifiers) {
      await verifier.ready();
      await verifier.ready();
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok, true);
    }
    await settle();
    assert.deepEqual(unset.errors.map(shape), [
      {
        name: "VerifierBackgroundError",
        code: "revocation_not_configured",
        source: "revocation",
        reason: "not_configured",
        status: undefined,
      },
    ]);
    assert.ok(unset.errors[0] instanceof VerifierBackgroundError);
    assert.ok(unset.errors[0] instanceof Error);
    assert.deepEqual(off.codes(), [], "revocation: false is deliberate: no warning");
    assert.deepEqual(configured.codes(), []);
  } finally {
    for (const verifier of verifiers) verifier.close();
    await sts.close();
  }
});

describe("ready() and onError against a dead port on 127.0.0.1", () => {
  test("ready() rejects with not_ready when nothing listens; both sources report unreachable", async () => {
    const port = await freePort();
    const hook = collector();
    const verifier = createVerifier({
      issuer: `http://127.0.0.1:${port}`,
      audience: AUDIENCE,
      jwksOptions: { cooldownMs: 50 },
      revocation: { url: `http://127.0.0.1:${port}/revocations`, intervalMs: 50 },
      readyTimeoutMs: 400,
      onError: hook.onError,
    });
    try {
      await assert.rejects(verifier.ready(), (error: unknown) => {
        assert.ok(error instanceof VerifierBackgroundError);
        assert.deepEqual(shape(error), {
          name: "VerifierBackgroundError",
          code: "not_ready",
          source: "jwks",
          reason: "unreachable",
          status: undefined,
        });
        assert.match(
          error.message,
          new RegExp(
            `^verifier not ready: the JWKS at http://127\\.0\\.0\\.1:${port}/jwks was not loaded within 400 ms \\(last error: JWKS fetch failed: GET http://127\\.0\\.0\\.1:${port}/jwks failed: `,
          ),
        );
        assert.ok(error.cause instanceof VerifierBackgroundError);
        assert.equal(error.cause.code, "jwks_fetch_failed");
        return true;
      });
      await hook.reported((e) => e.code === "revocation_poll_failed");
      const jwks = hook.errors.find((e) => e.code === "jwks_fetch_failed");
      const feed = hook.errors.find((e) => e.code === "revocation_poll_failed");
      assert.deepEqual(jwks && shape(jwks), {
        name: "VerifierBackgroundError",
        code: "jwks_fetch_failed",
        source: "jwks",
        reason: "unreachable",
        status: undefined,
      });
      assert.deepEqual(feed && shape(feed), {
        name: "VerifierBackgroundError",
        code: "revocation_poll_failed",
        source: "revocation",
        reason: "unreachable",
        status: undefined,
      });
      // The messages name the URL, never a cursor or a token.
      assert.match(feed?.message ?? "", new RegExp(`GET http://127\\.0\\.0\\.1:${port}/revocations failed`));
      // Meanwhile, requests fail closed.
      const key = await generateSigningKey();
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok ? "ok" : `${result.status} ${result.reason}`, "503 jwks_unavailable");
    } finally {
      verifier.close();
    }
  });

  test("ready() keeps retrying and resolves once the STS comes up on that port", async () => {
    const port = await freePort();
    const key = await generateSigningKey("key-1");
    const hook = collector();
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `http://127.0.0.1:${port}/jwks`,
      jwksOptions: { cooldownMs: 50 },
      revocation: { url: `http://127.0.0.1:${port}/revocations`, intervalMs: 60_000 },
      readyTimeoutMs: 60_000,
      onError: hook.onError,
      now: () => NOW_MS,
    });
    let settled = "pending";
    const ready = verifier.ready().then(
      () => {
        settled = "resolved";
      },
      (error: Error) => {
        settled = `rejected: ${error.message}`;
      },
    );
    await hook.reported((e) => e.code === "jwks_fetch_failed");
    await hook.reported((e) => e.code === "revocation_poll_failed");
    assert.equal(settled, "pending", "not ready while the STS is down");
    const sts = await startFakeSts([key.publicJwk], port);
    try {
      await ready;
      assert.equal(settled, "resolved");
      assert.ok(sts.requests.includes("/jwks"));
      // The feed was polled again by ready(), not after its 60 s interval.
      assert.ok(sts.requests.some((path) => path.startsWith("/revocations")));
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok, true, JSON.stringify(result));
    } finally {
      verifier.close();
      await sts.close();
    }
  });

  test("close() while ready() waits rejects it with reason closed", async () => {
    const port = await freePort();
    const verifier = createVerifier({
      issuer: `http://127.0.0.1:${port}`,
      audience: AUDIENCE,
      revocation: false,
      readyTimeoutMs: 60_000,
    });
    const ready = verifier.ready();
    verifier.close();
    await assert.rejects(ready, (error: unknown) => {
      assert.ok(error instanceof VerifierBackgroundError);
      assert.deepEqual([error.code, error.source, error.reason], ["not_ready", "jwks", "closed"]);
      assert.equal(
        error.message,
        `verifier not ready: closed before the JWKS at http://127.0.0.1:${port}/jwks was loaded`,
      );
      return true;
    });
  });
});

describe("onError: each background failure with its source, code and reason", () => {
  test("JWKS and feed answering errors: http_error with the status", async () => {
    const key = await generateSigningKey("key-1");
    const sts = await startFakeSts([key.publicJwk]);
    sts.state.jwksDown = true;
    sts.state.feedDown = true;
    const hook = collector();
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      jwksOptions: { cooldownMs: 20 },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 20 },
      readyTimeoutMs: 200,
      onError: hook.onError,
    });
    try {
      await assert.rejects(verifier.ready(), {
        code: "not_ready",
        source: "jwks",
        reason: "http_error",
        status: 500,
      });
      await hook.reported((e) => e.source === "revocation");
      const first = (code: VerifierBackgroundErrorCode) => hook.errors.find((e) => e.code === code);
      assert.deepEqual(shape(first("jwks_fetch_failed") as VerifierBackgroundError), {
        name: "VerifierBackgroundError",
        code: "jwks_fetch_failed",
        source: "jwks",
        reason: "http_error",
        status: 500,
      });
      assert.equal(
        first("jwks_fetch_failed")?.message,
        `JWKS fetch failed: GET ${sts.url}/jwks answered 500`,
      );
      assert.deepEqual(shape(first("revocation_poll_failed") as VerifierBackgroundError), {
        name: "VerifierBackgroundError",
        code: "revocation_poll_failed",
        source: "revocation",
        reason: "http_error",
        status: 503,
      });
      // The keys come back; the feed stays down: ready() now waits for, and names, the feed.
      sts.state.jwksDown = false;
      await assert.rejects(verifier.ready(), {
        code: "not_ready",
        source: "revocation",
        reason: "http_error",
        status: 503,
      });
      sts.state.feedDown = false;
      await verifier.ready();
    } finally {
      verifier.close();
      await sts.close();
    }
  });

  test("garbage answers: invalid_response for the JWKS and the feed; the stream's 404 is an http_error", async () => {
    const server = await startServer((req, res) => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (path === "/jwks") return sendJson(res, 200, { keys: "none" });
      if (path === "/revocations") return sendJson(res, 200, { revocations: [{ approval_id: 7 }] });
      sendJson(res, 404, { error: "not_found" });
    });
    const hook = collector();
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${server.url}/jwks`,
      revocation: { url: `${server.url}/revocations`, intervalMs: 60_000, stream: true },
      readyTimeoutMs: 200,
      onError: hook.onError,
    });
    try {
      await assert.rejects(verifier.ready(), {
        code: "not_ready",
        source: "jwks",
        reason: "invalid_response",
      });
      await hook.reported((e) => e.code === "revocation_poll_failed");
      await hook.reported((e) => e.code === "revocation_stream_failed");
      const first = (code: VerifierBackgroundErrorCode) => {
        const found = hook.errors.find((e) => e.code === code);
        return found && shape(found);
      };
      assert.deepEqual(
        [first("jwks_fetch_failed"), first("revocation_poll_failed"), first("revocation_stream_failed")],
        [
          {
            name: "VerifierBackgroundError",
            code: "jwks_fetch_failed",
            source: "jwks",
            reason: "invalid_response",
            status: undefined,
          },
          {
            name: "VerifierBackgroundError",
            code: "revocation_poll_failed",
            source: "revocation",
            reason: "invalid_response",
            status: undefined,
          },
          {
            name: "VerifierBackgroundError",
            code: "revocation_stream_failed",
            source: "revocation",
            reason: "http_error",
            status: 404,
          },
        ],
      );
    } finally {
      verifier.close();
      await server.close();
    }
  });

  test("a throwing onError (and onBackgroundError), or a rejecting async one, breaks nothing", async () => {
    const key = await generateSigningKey("key-1");
    const sts = await startFakeSts([key.publicJwk]);
    sts.state.jwksDown = true;
    let thrown = 0;
    const throwing = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      jwksOptions: { cooldownMs: 20 },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 20 },
      onError: () => {
        thrown++;
        throw new Error("hook bug");
      },
      onBackgroundError: () => {
        throw new Error("old hook bug");
      },
    });
    const rejecting = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwksUri: `${sts.url}/jwks`,
      jwksOptions: { cooldownMs: 20 },
      revocation: false,
      onError: async () => {
        thrown++;
        throw new Error("async hook bug");
      },
    });
    const verifiers: Verifier[] = [throwing, rejecting];
    try {
      const now = Math.floor(Date.now() / 1000);
      const token = await mintToken(key, accessTokenClaims(now));
      for (const verifier of verifiers) {
        // The JWKS is down: the refusal is the fail-closed 503, not a broken verifier.
        const down = await verifier.verify({ authorization: `Bearer ${token}` });
        assert.equal(down.ok ? "ok" : `${down.status} ${down.reason}`, "503 jwks_unavailable");
      }
      assert.ok(thrown >= 2, `the hooks ran and threw (${thrown})`);
      sts.state.jwksDown = false;
      for (const verifier of verifiers) {
        await verifier.ready();
        const up = await verifier.verify({ authorization: `Bearer ${token}` });
        assert.equal(up.ok ? "ok" : `${up.status} ${up.reason}`, "ok");
      }
    } finally {
      for (const verifier of verifiers) verifier.close();
      await sts.close();
    }
  });
});

describe("ready() and onError with a real STS", () => {
  let sts: TestApp;
  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
  });
  after(async () => {
    await sts?.stop();
  });

  test("ready() resolves once the STS's keys and feed are loaded; its token verifies; its outage reaches onError", async () => {
    const hook = collector();
    const verifier = createVerifier({
      issuer: sts.url,
      audience: AUDIENCE,
      jwksOptions: { cooldownMs: 50 },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 50 },
      rateLimit: false,
      cache: false,
      onError: hook.onError,
    });
    try {
      await verifier.ready();
      assert.deepEqual(hook.codes(), []);
      const approvalId = await insertApproval(sts.handle.db, { max_tokens: 2, scope: "crm:read" });
      const subject_token = await sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
      const minted = await exchange(sts.url, { subject_token, authorization_details: agentTask(approvalId) });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      const token = String(minted.body.access_token);
      const verified = await verifier.verify({
        authorization: `Bearer ${token}`,
        requiredScopes: ["crm:read"],
      });
      assert.equal(verified.ok ? verified.approvalId : verified.reason, approvalId);

      await sts.stop();
      await hook.reported((e) => e.code === "revocation_poll_failed");
      // A token with a kid the verifier has not seen makes it refetch the JWKS: that fails too.
      const stranger = await generateSigningKey("stranger");
      await verifier.verify({
        authorization: `Bearer ${await mintToken(stranger, accessTokenClaims(Math.floor(Date.now() / 1000)))}`,
      });
      await hook.reported((e) => e.code === "jwks_fetch_failed");
      const sources = new Set(hook.errors.map((e) => `${e.source}/${e.code}/${e.reason}`));
      assert.deepEqual([...sources].sort(), [
        "jwks/jwks_fetch_failed/unreachable",
        "revocation/revocation_poll_failed/unreachable",
      ]);
    } finally {
      verifier.close();
    }
  });
});
