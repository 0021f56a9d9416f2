import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { VerifierBackgroundError } from "../../gateway-verifier/src/index.js";
import { RevocationList } from "../../gateway-verifier/src/revocation.js";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  NOW,
  NOW_MS,
  startFakeSts,
} from "./helpers.js";

/**
 * The revocation list is bounded by `revocation.maxEntries`; past it, the entry added longest ago is
 * dropped even while its tokens may still be valid (the verifier then accepts them: fail open for that
 * approval). That must never go unseen: each poll after such drops reports them once, through
 * `onError` (code `revocation_list_full`), or without a hook once per process through
 * `process.emitWarning`.
 *
 * Adversary: a careless operator (a `maxEntries` too small for the feed), and a flood of revocations
 * in the STS's feed, the only thing that fills the list.
 */

const LIST_FULL_WARNING = "COUNTERSIGN_REVOCATION_LIST_FULL";

/** Waits (bounded) until `condition` holds; keeps the process alive meanwhile (the verifier's timers do not). */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// First in this file: the process-wide warning fires once per process, so no verifier without
// `onError` may fill its list before this test.
test("without onError, a full revocation list is said once per process (process.emitWarning)", async () => {
  const key = await generateSigningKey();
  const sts = await startFakeSts([key.publicJwk]);
  for (let i = 1; i <= 4; i++) sts.revoke(`appr_${i}`);
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on("warning", onWarning);
  const options = {
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { keys: [key.publicJwk] },
    revocation: { url: `${sts.url}/revocations`, intervalMs: 10, maxEntries: 2 },
    now: () => NOW_MS,
  };
  const first = createVerifier(options);
  const second = createVerifier(options);
  try {
    await first.ready();
    await second.ready();
    const ours = () => warnings.filter((w) => (w as Error & { code?: string }).code === LIST_FULL_WARNING);
    await until(() => ours().length > 0, "the warning");
    // Both lists dropped two, polls go on: still one warning.
    const polled = sts.requests.length;
    await until(() => sts.requests.length >= polled + 10, "ten more polls");
    assert.equal(ours().length, 1);
    assert.equal(ours()[0]?.name, "CountersignWarning");
    assert.equal(
      ours()[0]?.message,
      "revocation list full: 2 revocations still in force dropped (those added longest ago) to stay within revocation.maxEntries (2); tokens of those approvals are accepted again until they expire: raise revocation.maxEntries",
    );
  } finally {
    process.off("warning", onWarning);
    first.close();
    second.close();
    await sts.close();
  }
});

describe("the verifier's revocation list past maxEntries", () => {
  test("drops the revocation added longest ago though its tokens are still valid (they are accepted again), and reports revocation_list_full through onError once per poll that dropped any, never to onBackgroundError", async () => {
    const key = await generateSigningKey();
    const sts = await startFakeSts([key.publicJwk]);
    for (let i = 1; i <= 5; i++) sts.revoke(`appr_${i}`);
    const errors: VerifierBackgroundError[] = [];
    const deprecated: Error[] = [];
    const verifier = createVerifier({
      issuer: ISSUER,
      audience: AUDIENCE,
      jwks: { keys: [key.publicJwk] },
      rateLimit: false,
      revocation: { url: `${sts.url}/revocations`, intervalMs: 10, maxEntries: 3 },
      now: () => NOW_MS,
      onError: (error) => errors.push(error),
      onBackgroundError: (error) => deprecated.push(error),
    });
    const verify = async (approvalId: string) => {
      const token = await mintToken(key, accessTokenClaims(NOW, { approval_id: approvalId }));
      const result = await verifier.verify({ authorization: `Bearer ${token}` });
      return result.ok ? "allowed" : result.reason;
    };
    try {
      await verifier.ready();
      await until(() => errors.length > 0, "the first report");
      // The first two revocations were dropped while their tokens are valid: accepted (fail open).
      assert.deepEqual(await Promise.all(["appr_1", "appr_2", "appr_3", "appr_4", "appr_5"].map(verify)), [
        "allowed",
        "allowed",
        "approval_revoked",
        "approval_revoked",
        "approval_revoked",
      ]);
      const polled = sts.requests.length;
      await until(() => sts.requests.length >= polled + 10, "ten more polls");
      assert.deepEqual(
        errors.map((error) => ({
          name: error.name,
          code: error.code,
          source: error.source,
          reason: error.reason,
          status: error.status,
          message: error.message,
        })),
        [
          {
            name: "VerifierBackgroundError",
            code: "revocation_list_full",
            source: "revocation",
            reason: "list_full",
            status: undefined,
            message:
              "revocation list full: 2 revocations still in force dropped (those added longest ago) to stay within revocation.maxEntries (3); tokens of those approvals are accepted again until they expire: raise revocation.maxEntries",
          },
        ],
      );

      sts.revoke("appr_6");
      await until(() => errors.length > 1, "the second report");
      assert.equal(
        errors[1]?.message,
        "revocation list full: 1 revocation still in force dropped (those added longest ago) to stay within revocation.maxEntries (3); tokens of those approvals are accepted again until they expire: raise revocation.maxEntries",
      );
      assert.deepEqual(await Promise.all(["appr_3", "appr_4", "appr_5", "appr_6"].map(verify)), [
        "allowed",
        "approval_revoked",
        "approval_revoked",
        "approval_revoked",
      ]);
      assert.equal(errors.length, 2);
      assert.deepEqual(deprecated, []);
    } finally {
      verifier.close();
      await sts.close();
    }
  });

  test("RevocationList.dropped counts only entries still in force: one past its retention is forgotten, not dropped", () => {
    const list = new RevocationList(1_000, 2);
    const at = (ms: number) => new Date(ms).toISOString();
    list.add({ approval_id: "a", revoked_at: at(0), cursor: "1" }, 0);
    list.add({ approval_id: "b", revoked_at: at(1_500), cursor: "2" }, 1_500);
    // "a" is past its retention (0 + 1000 < 2000): evicting it loses nothing.
    list.add({ approval_id: "c", revoked_at: at(2_000), cursor: "3" }, 2_000);
    assert.deepEqual([list.has("a"), list.dropped, list.size], [false, 0, 2]);
    // "b" is still in force (1500 + 1000 ≥ 2100): evicting it is a drop.
    list.add({ approval_id: "d", revoked_at: at(2_100), cursor: "4" }, 2_100);
    assert.deepEqual(
      [list.has("b"), list.has("c"), list.has("d"), list.dropped, list.size],
      [false, true, true, 1, 2],
    );
    assert.equal(list.maxEntries, 2);
  });
});
