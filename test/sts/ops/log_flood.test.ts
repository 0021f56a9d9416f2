import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { postForm, startTestApp } from "../../helpers/app.js";

const FLOOD = 300;
const MAX_REPEATS = 20;

/**
 * An anonymous caller looping on refused requests (a bad bearer token at the approval API, an unknown
 * client at the token endpoint) makes the STS write at most `LOG_MAX_REPEATS` lines of each kind per
 * 10 seconds; the rest are counted, and the count is written when the window ends or the STS stops.
 */
describe("an anonymous flood of refused requests", () => {
  test(`${FLOOD} refusals at the approval API and ${FLOOD} at the token endpoint write ${MAX_REPEATS} lines of each kind, then one count each`, async () => {
    const sts = await startTestApp({ engine: "pglite", env: { LOG_MAX_REPEATS: String(MAX_REPEATS) } });
    let stopped = false;
    try {
      const before = sts.logs.lines.length;
      for (let i = 0; i < FLOOD; i++) {
        const response = await fetch(`${sts.url}/approvals?status=pending`, {
          headers: { authorization: "Bearer not-a-jwt" },
        });
        assert.equal(response.status, 401);
        await response.body?.cancel();
        const token = await postForm(`${sts.url}/token`, {
          grant_type: "client_credentials",
          client_id: `nobody-${i}`,
          client_secret: "guess",
        });
        assert.equal(token.status, 401);
        assert.equal(token.body.error, "invalid_client");
      }
      const written = sts.logs.lines.slice(before).map((line) => JSON.parse(line) as Record<string, unknown>);
      const kinds = new Map<string, number>();
      for (const line of written) {
        const kind = `${line.msg} ${line.reason ?? ""}`;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      assert.deepEqual(Object.fromEntries(kinds), {
        "approval api refusal credentials_invalid": MAX_REPEATS,
        "client authentication failed client_auth_failed": MAX_REPEATS,
      });
      await sts.stop();
      stopped = true;
      const summaries = sts.logs.lines
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line.event === "log.repeats_suppressed")
        .map((line) => [line.repeated, line.suppressed]);
      assert.deepEqual(summaries, [
        [
          { msg: "approval api refusal", event: "approval.list", reason: "credentials_invalid" },
          FLOOD - MAX_REPEATS,
        ],
        [
          {
            msg: "client authentication failed",
            event: "token.client_auth",
            reason: "client_auth_failed",
          },
          FLOOD - MAX_REPEATS,
        ],
      ]);
    } finally {
      if (!stopped) await sts.stop();
    }
  });
});
