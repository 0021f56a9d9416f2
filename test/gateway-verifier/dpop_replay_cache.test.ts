import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DpopReplayCache } from "../../gateway-verifier/src/dpop_replay_cache.js";
import { countMapIteratorSteps } from "./helpers.js";

describe("DpopReplayCache", () => {
  test("100 000 proofs through a cache of 1000: expired entries are dropped from the front in O(1) amortized (at most 2 Map iterator steps per proof, never a scan), none refused, size ≤ capacity", () => {
    const cache = new DpopReplayCache(1000, 1000, 1000);
    const flood = 100_000;
    const outcomes = new Set<string | undefined>();
    let largest = 0;
    const steps = countMapIteratorSteps(3 * flood, () => {
      // One proof per millisecond, each live for 999 ms: 1000 live at most.
      for (let t = 0; t < flood; t++) {
        outcomes.add(cache.record(`jkt.${t}`, "agent", t + 999, t));
        largest = Math.max(largest, cache.size);
      }
    });
    assert.deepEqual([...outcomes], [undefined]);
    assert.equal(largest, 1000);
    assert.ok(steps <= 2 * flood, `${steps} iterator steps for ${flood} proofs`);
  });

  test("a full cache refuses (dpop_replay_cache_full) rather than evict; a live entry at the front keeps the expired ones behind it until it expires, then all go", () => {
    const cache = new DpopReplayCache(3, 3, 1000);
    assert.equal(cache.record("a", "c1", 100, 0), undefined);
    assert.equal(cache.record("b", "c2", 10, 0), undefined);
    assert.equal(cache.record("c", "c3", 10, 0), undefined);
    assert.equal(cache.record("d", "c4", 150, 50), "dpop_replay_cache_full");
    assert.equal(
      cache.record("a", "c1", 100, 100),
      "dpop_proof_replayed",
      "live until its expiry, inclusive",
    );
    assert.equal(cache.size, 3);
    assert.equal(cache.record("d", "c4", 150, 101), undefined);
    assert.equal(cache.size, 1);
  });

  test("each client holds at most its share (dpop_client_share_exceeded), replays are reported first, and a share is given back when its entries are dropped", () => {
    const cache = new DpopReplayCache(10, 2, 1000);
    assert.equal(cache.record("k.1", "hostile", 100, 0), undefined);
    assert.equal(cache.record("k.2", "hostile", 100, 0), undefined);
    assert.equal(cache.record("k.3", "hostile", 100, 0), "dpop_client_share_exceeded");
    assert.equal(cache.record("k.1", "hostile", 100, 0), "dpop_proof_replayed");
    assert.equal(cache.record("v.1", "victim", 100, 0), undefined);
    assert.equal(cache.record("k.3", "hostile", 200, 101), undefined);
    assert.equal(cache.record("k.4", "hostile", 200, 101), undefined);
    assert.equal(cache.record("k.5", "hostile", 200, 101), "dpop_client_share_exceeded");
  });

  test("an expired id still held behind a live front is recorded again once, counted once", () => {
    const cache = new DpopReplayCache(10, 1, 1000);
    assert.equal(cache.record("front", "other", 100, 0), undefined);
    assert.equal(cache.record("k.x", "agent", 10, 0), undefined);
    assert.equal(cache.record("k.x", "agent", 60, 20), undefined, "expired: a new proof with that jti");
    assert.equal(cache.record("k.x", "agent", 60, 20), "dpop_proof_replayed");
    assert.equal(cache.record("k.y", "agent", 60, 20), "dpop_client_share_exceeded");
    assert.equal(cache.size, 2);
  });
});
