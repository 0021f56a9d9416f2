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
  await sleep(500);
  // Rotation, worst case: the next key is published and used at once (no pre-publication lead time).
  sts.state.keys = [oldKey.publicJwk, newKey.publicJwk];
  signer = newKey;
  await sleep(700);
  // Every token signed by the old key has been replaced; the STS drops it.
  sts.state.keys = [newKey.publicJwk];
  const jwksFetchesBeforeDrop = sts.requests.length;
  await sleep(700);
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
