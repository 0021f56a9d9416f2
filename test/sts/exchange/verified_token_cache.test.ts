import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createVerifiedTokenCache } from "../../../sts/src/exchange/verified_token_cache.js";
import { IdentityTokenError, type VerifiedIdentity } from "../../../sts/src/identity/trusted_issuers.js";

const T0 = 1_800_000_000_000;

function identity(expSeconds: number): VerifiedIdentity {
  return {
    issuer: "https://idp.example.test",
    subject: "alice",
    claims: { sub: "alice", exp: expSeconds },
    usages: ["subject"],
  };
}

describe("verified token cache", () => {
  test("reuses a verification for the same token and usage only", async () => {
    const cache = createVerifiedTokenCache({ now: () => T0 });
    let calls = 0;
    const verify = async () => {
      calls += 1;
      return identity(T0 / 1000 + 3600);
    };
    await cache.verify("a.b.c", "subject", verify);
    await cache.verify("a.b.c", "subject", verify);
    assert.equal(calls, 1);
    await cache.verify("a.b.c", "actor", verify);
    await cache.verify("a.b.d", "subject", verify);
    assert.equal(calls, 3);
  });

  test("never past exp plus the clock tolerance, never longer than maxAgeMs", async () => {
    let now = T0;
    const cache = createVerifiedTokenCache({ now: () => now, maxAgeMs: 60_000, clockToleranceSeconds: 30 });
    let calls = 0;
    const shortLived = async () => {
      calls += 1;
      return identity(T0 / 1000 + 10);
    };
    await cache.verify("short", "subject", shortLived);
    now = T0 + 39_999;
    await cache.verify("short", "subject", shortLived);
    assert.equal(calls, 1);
    now = T0 + 40_000; // exp + 30 s: the verifier decides again (and would say expired)
    await cache.verify("short", "subject", shortLived);
    assert.equal(calls, 2);

    now = T0;
    let longCalls = 0;
    const longLived = async () => {
      longCalls += 1;
      return identity(T0 / 1000 + 3600);
    };
    await cache.verify("long", "subject", longLived);
    now = T0 + 60_000;
    await cache.verify("long", "subject", longLived);
    assert.equal(longCalls, 2);
  });

  test("refusals are not cached", async () => {
    const cache = createVerifiedTokenCache({ now: () => T0 });
    let calls = 0;
    const refuse = async (): Promise<VerifiedIdentity> => {
      calls += 1;
      throw new IdentityTokenError("signature_invalid", "the subject token's signature is invalid");
    };
    for (let i = 0; i < 2; i++) {
      await assert.rejects(cache.verify("bad", "subject", refuse), IdentityTokenError);
    }
    assert.equal(calls, 2);
    assert.equal(cache.size, 0);
  });

  test("is bounded: the least recently used entry goes first", async () => {
    const cache = createVerifiedTokenCache({ now: () => T0, maxEntries: 2 });
    let calls = 0;
    const verify = async () => {
      calls += 1;
      return identity(T0 / 1000 + 3600);
    };
    await cache.verify("one", "subject", verify);
    await cache.verify("two", "subject", verify);
    await cache.verify("one", "subject", verify); // hit: "two" is now the oldest
    await cache.verify("three", "subject", verify);
    assert.equal(cache.size, 2);
    assert.equal(calls, 3);
    await cache.verify("one", "subject", verify);
    assert.equal(calls, 3);
    await cache.verify("two", "subject", verify);
    assert.equal(calls, 4);
  });
});
