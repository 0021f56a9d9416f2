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
  test(`${FLOOD} refusals at the approval API and ${FLOOD} at the token endpoint write ${MAX_REPEATS} lines of each kind per 10 s, the rest counted`, async () => {
    const sts = await startTestApp({ engine: "pglite", env: { LOG_MAX_REPEATS: String(MAX_REPEATS) } });
    let stopped = false;
    try {
      const before = sts.logs.lines.length;
      const started = Date.now();
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
      // Each kind's windows are 10 s from its first line; a slow machine may span more than one.
      const windows = Math.ceil((Date.now() - started) / 10_000) + 1;
      await sts.stop();
      stopped = true;
      const lines = sts.logs.lines.slice(before).map((line) => JSON.parse(line) as Record<string, unknown>);
      const kinds = [
        { msg: "approval api refusal", event: "approval.list", reason: "credentials_invalid" },
        { msg: "client authentication failed", event: "token.client_auth", reason: "client_auth_failed" },
      ];
      for (const kind of kinds) {
        const written = lines.filter((line) => line.msg === kind.msg && line.reason === kind.reason).length;
        const suppressed = lines
          .filter(
            (line) =>
              line.event === "log.repeats_suppressed" &&
              JSON.stringify(line.repeated) === JSON.stringify(kind),
          )
          .reduce((sum, line) => sum + Number(line.suppressed), 0);
        assert.ok(written >= MAX_REPEATS && written <= MAX_REPEATS * windows, `${written} ${kind.msg} lines`);
        // Every refusal is either a line or counted in a summary: nothing is lost, nothing counted twice.
        assert.equal(written + suppressed, FLOOD, kind.msg);
      }
      // Nothing else was logged per request.
      const others = lines.filter(
        (line) =>
          line.event !== "log.repeats_suppressed" &&
          !kinds.some((kind) => line.msg === kind.msg && line.reason === kind.reason),
      );
      assert.deepEqual(others, []);
    } finally {
      if (!stopped) await sts.stop();
    }
  });
});
