import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AUDIENCE,
  accessTokenClaims,
  createVerifier,
  generateSigningKey,
  ISSUER,
  mintToken,
  type SigningKey,
  startFakeSts,
} from "./helpers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until `condition` holds, bounded (20 s) for the run: the phases below end on what the load has
 * done, not after fixed pauses a slow machine can outlast.
 */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !condition(); i++) await sleep(10);
}

test("key rotation at the STS: a gateway under steady load sees zero failures", async () => {
  const oldKey = await generateSigningKey("key-old");
  const newKey = await generateSigningKey("key-new");
  const sts = await startFakeSts([oldKey.publicJwk]);
  const verifier = createVerifier({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwksUri: `${sts.url}/jwks`,
    jwksOptions: { cacheMaxAgeMs: 300, cooldownMs: 200 },
    rateLimit: false,
  });
  await verifier.ready();

  let signer: SigningKey = oldKey;
  let running = true;
  const failures: string[] = [];
  const verifiedBy = new Map<string, number>();
  /** The kid of each agent's current token. */
  const holding: string[] = [];

  async function agent(id: number): Promise<void> {
    let token = "";
    let tokenKid = "";
    let requests = 0;
    while (running) {
      // Each agent exchanges for a fresh token every few requests (uncached), and reuses it in between (cached).
      if (requests % 5 === 0) {
        tokenKid = signer.kid;
        const now = Math.floor(Date.now() / 1000);
        token = await mintToken(signer, accessTokenClaims(now, { client_id: `agent-${id}` }));
        holding[id] = tokenKid;
      }
      requests++;
      const result = await verifier.verify({
        authorization: `Bearer ${token}`,
        requiredScopes: ["crm:read"],
      });
      if (result.ok) verifiedBy.set(tokenKid, (verifiedBy.get(tokenKid) ?? 0) + 1);
      else failures.push(`${tokenKid}: ${result.reason}`);
      await sleep(2);
    }
  }

  const agents = Array.from({ length: 8 }, (_, i) => agent(i));
  const count = (kid: string) => verifiedBy.get(kid) ?? 0;
  await until(() => count("key-old") > 50 || failures.length > 0);
  // Rotation, worst case: the next key is published and used at once (no pre-publication lead time).
  sts.state.keys = [oldKey.publicJwk, newKey.publicJwk];
  signer = newKey;
  await until(
    () =>
      (holding.length === 8 && holding.every((kid) => kid === "key-new") && count("key-new") > 50) ||
      failures.length > 0,
  );
  // Every token signed by the old key has been replaced; the STS drops it. Under load, until the
  // verifier has fetched the JWKS twice since (a refresh starts only once the one before it has ended).
  sts.state.keys = [newKey.publicJwk];
  const jwksFetchesBeforeDrop = sts.requests.length;
  await until(() => sts.requests.length >= jwksFetchesBeforeDrop + 2 || failures.length > 0);
  running = false;
  await Promise.all(agents);

  assert.deepEqual(failures, []);
  assert.ok((verifiedBy.get("key-old") ?? 0) > 50, `old key verified ${verifiedBy.get("key-old")} requests`);
  assert.ok((verifiedBy.get("key-new") ?? 0) > 50, `new key verified ${verifiedBy.get("key-new")} requests`);
  assert.ok(sts.requests.length > jwksFetchesBeforeDrop, "the JWKS was refreshed after the drop");

  // The dropped key is no longer trusted, even for a token verified (and cached) before.
  const now = Math.floor(Date.now() / 1000);
  const late = await mintToken(oldKey, accessTokenClaims(now));
  const refused = await verifier.verify({ authorization: `Bearer ${late}` });
  assert.equal(refused.ok ? "ok" : refused.reason, "unknown_kid");
  verifier.close();
  await sts.close();
});
