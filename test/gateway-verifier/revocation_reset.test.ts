import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { describe, test } from "node:test";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  sendJson,
  startServer,
} from "./helpers.js";

interface Entry {
  approval_id: string;
  revoked_at: string;
  cursor: string;
}

const REVOKED_AT = new Date(NOW_MS).toISOString();

/**
 * A fake feed with epochs: `epoch` and its `entries` (cursors `<epoch>.<n>`, n from 1). A cursor of
 * another epoch is answered 410 `cursor_reset` restarting at `<epoch>.0`, as the STS does.
 */
async function startEpochFeed() {
  const state = { epoch: "e1", entries: [] as Entry[], failAfterReset: false, resets: 0 };
  const server = await startServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== "/revocations") return sendJson(res, 404, {});
    const after = url.searchParams.get("after");
    if (after !== null && !after.startsWith(`${state.epoch}.`)) {
      state.resets++;
      return sendJson(res, 410, {
        error: "cursor_reset",
        error_description: "the cursor is from another epoch of the feed",
        reason: "cursor_epoch_mismatch",
        cursor: `${state.epoch}.0`,
      });
    }
    const position = after === null ? 0 : Number(after.slice(after.indexOf(".") + 1));
    if (state.failAfterReset && state.resets > 0 && position > 0) {
      return sendJson(res, 503, { error: "temporarily_unavailable" });
    }
    const page = state.entries.filter((e) => Number(e.cursor.slice(e.cursor.indexOf(".") + 1)) > position);
    const first = page.slice(0, 1);
    sendJson(res, 200, { revocations: first, cursor: first.at(-1)?.cursor ?? `${state.epoch}.${position}` });
  });
  return {
    ...server,
    state,
    revoke(approvalId: string) {
      state.entries.push({
        approval_id: approvalId,
        revoked_at: REVOKED_AT,
        cursor: `${state.epoch}.${state.entries.length + 1}`,
      });
    },
  };
}

async function until(condition: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe("gateway verifier: a feed that answers 410 cursor_reset", () => {
  test("resynchronises from the cursor given, keeps what it knew, and refuses a revocation made after the reset", async () => {
    const key = await generateSigningKey();
    const feed = await startEpochFeed();
    feed.revoke("appr_before");
    const errors: Error[] = [];
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${feed.url}/revocations`, intervalMs: 10 },
      now: () => NOW_MS,
      onBackgroundError: (error) => errors.push(error),
    });
    try {
      await verifier.ready();
      const before = await mintToken(key, accessTokenClaims(NOW, { approval_id: "appr_before" }));
      const after = await mintToken(key, accessTokenClaims(NOW, { approval_id: "appr_after" }));
      assert.equal((await verifier.verify({ authorization: `Bearer ${before}` })).ok, false);
      assert.equal((await verifier.verify({ authorization: `Bearer ${after}` })).ok, true);

      // The database is replaced: another epoch, whose feed does not hold appr_before.
      feed.state.epoch = "e2";
      feed.state.entries = [];
      feed.revoke("appr_after");
      await until(
        async () => !(await verifier.verify({ authorization: `Bearer ${after}` })).ok,
        "the refusal",
      );
      const refused = await verifier.verify({ authorization: `Bearer ${after}` });
      assert.equal(refused.ok, false);
      assert.equal(refused.ok ? "" : refused.reason, "approval_revoked");
      const kept = await verifier.verify({ authorization: `Bearer ${before}` });
      assert.equal(kept.ok ? "" : kept.reason, "approval_revoked");
      assert.ok(feed.requests.includes("/revocations?after=e1.1"));
      assert.ok(feed.requests.includes("/revocations?after=e2.0"));
      assert.deepEqual(errors, []);
    } finally {
      verifier.close();
      await feed.close();
    }
  });

  test("is not marked synced until the snapshot after a reset is read: a failure there goes stale (503), never silently", async () => {
    const key = await generateSigningKey();
    const feed = await startEpochFeed();
    let clock = NOW_MS;
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${feed.url}/revocations`, intervalMs: 10, maxStalenessMs: 30_000 },
      now: () => clock,
      maxTokenAgeSeconds: 600,
      onBackgroundError: () => {},
    });
    try {
      await verifier.ready();
      feed.state.failAfterReset = true;
      feed.state.epoch = "e2";
      feed.revoke("appr_x");
      feed.revoke("appr_y");
      const requests = feed.requests.length;
      await until(
        () => feed.requests.filter((path) => path === "/revocations?after=e2.1").length >= 2,
        "polls",
      );
      assert.ok(feed.requests.length > requests);
      clock += 30_001;
      const token = await mintToken(key, accessTokenClaims(NOW, { approval_id: "appr_z" }));
      const result = await verifier.verify({ authorization: `Bearer ${token}` });
      assert.equal(result.ok, false);
      assert.equal(result.ok ? "" : result.reason, "revocation_unavailable");
      assert.equal(result.ok ? 0 : result.status, 503);
    } finally {
      verifier.close();
      await feed.close();
    }
  });

  test("a reset without end, or a 410 that is not cursor_reset, fails the poll (onBackgroundError) and the verifier answers 503", async () => {
    const key = await generateSigningKey();
    for (const body of [
      { error: "cursor_reset", error_description: "again", cursor: "e9.0" },
      { error: "gone", error_description: "not a feed answer" },
      { error: "cursor_reset", cursor: "bad cursor\n" },
    ]) {
      const feed = await startServer((_req, res) => sendJson(res, 410, body));
      const errors: Error[] = [];
      const verifier = createVerifier({
        issuer: ISSUER,
        audience: AUDIENCE,
        jwks: { keys: [key.publicJwk] },
        revocation: { url: `${feed.url}/revocations`, intervalMs: 60_000 },
        now: () => NOW_MS,
        onBackgroundError: (error) => errors.push(error),
      });
      try {
        const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
        assert.equal(result.ok ? "" : result.reason, "revocation_unavailable", JSON.stringify(body));
        assert.equal(errors.length, 1);
        assert.match(
          errors[0]?.message ?? "",
          body.error === "gone"
            ? /410 that is not cursor_reset/
            : body.cursor === "e9.0"
              ? /cursor reset 4 times in one poll/
              : /malformed cursor/,
        );
        if (body.cursor === "e9.0") assert.equal(feed.requests.length, 4);
      } finally {
        verifier.close();
        await feed.close();
      }
    }
  });

  test("the stream, told 410 for its Last-Event-ID, reconnects without one (live)", async () => {
    const key = await generateSigningKey();
    const seen: Array<string | undefined> = [];
    const open: ServerResponse[] = [];
    const sts = await startServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === "/revocations") return sendJson(res, 200, { revocations: [], cursor: "e1.0" });
      const lastId = req.headers["last-event-id"];
      seen.push(typeof lastId === "string" ? lastId : undefined);
      if (seen.length === 1) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        const entry = { approval_id: "appr_1", revoked_at: REVOKED_AT, cursor: "e1.5" };
        res.end(`id: e1.5\ndata: ${JSON.stringify(entry)}\n\n`);
        return;
      }
      if (seen.length === 2) {
        return sendJson(res, 410, { error: "cursor_reset", error_description: "restored", cursor: "e2.0" });
      }
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(": connected\n\n");
      open.push(res);
    });
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${sts.url}/revocations`, intervalMs: 60_000, stream: true },
      now: () => NOW_MS,
    });
    try {
      await verifier.ready();
      await until(() => seen.length >= 3, "three stream connections");
      assert.deepEqual(seen.slice(0, 3), [undefined, "e1.5", undefined]);
    } finally {
      verifier.close();
      await sts.close();
    }
  });
});

test("a feed page whose body stalls past timeoutMs is reported as a timeout, and one that is not JSON as invalid_response; the verifier answers 503", async () => {
  const key = await generateSigningKey();
  const cases = [
    {
      stall: true,
      reason: "timeout",
      message: /revocation.*GET http:\/\/127\.0\.0\.1:\d+\/revocations timed out$/,
    },
    {
      stall: false,
      reason: "invalid_response",
      message: /GET http:\/\/127\.0\.0\.1:\d+\/revocations: the body is not JSON$/,
    },
  ];
  for (const { stall, reason, message } of cases) {
    const held: ServerResponse[] = [];
    const feed = await startServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      if (stall) {
        res.write('{"revocations": [');
        held.push(res);
      } else res.end("<html>not json</html>");
    });
    const errors: Array<Error & { reason?: string }> = [];
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      revocation: { url: `${feed.url}/revocations`, intervalMs: 60_000, timeoutMs: 200 },
      now: () => NOW_MS,
      onBackgroundError: (error) => errors.push(error),
    });
    try {
      const result = await verifier.verify({ authorization: `Bearer ${await mintToken(key)}` });
      assert.equal(result.ok ? "" : result.reason, "revocation_unavailable");
      assert.equal(errors.length, 1);
      assert.equal(errors[0]?.reason, reason);
      assert.match(errors[0]?.message ?? "", message);
    } finally {
      verifier.close();
      for (const res of held) res.destroy();
      await feed.close();
    }
  }
});
