import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type RankedEntry,
  type ReadOlder,
  type RoundPosition,
  rankPage,
  type SnapshotEntry,
} from "../../../sts/src/approvals/pending_rounds.js";

/** A deterministic pseudo-random source (mulberry32), so a failure names a seed that repeats it. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Newest first, as the snapshot is read. */
function newestFirst(a: SnapshotEntry, b: SnapshotEntry): number {
  return b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** A snapshot served newest first from memory, counting the entries read. */
function source(entries: readonly SnapshotEntry[]) {
  const sorted = [...entries].sort(newestFirst);
  const counter = { read: 0, reads: 0 };
  const read: ReadOlder = async (before, count) => {
    const start =
      before === undefined
        ? 0
        : sorted.findIndex((entry) => newestFirst(entry, { ...before, clientId: "", live: true }) > 0);
    const batch = start < 0 ? [] : sorted.slice(start, start + count);
    counter.read += batch.length;
    counter.reads += 1;
    return batch;
  };
  return { read, counter };
}

/**
 * The list by its definition: every entry's round is the number of its agent's entries that are newer;
 * the live ones, by round, then newest first.
 */
function reference(entries: readonly SnapshotEntry[]): RankedEntry[] {
  const ranked = entries.map((entry) => ({
    ...entry,
    round: entries.filter((other) => other.clientId === entry.clientId && newestFirst(other, entry) < 0)
      .length,
  }));
  return ranked.filter((entry) => entry.live).sort((a, b) => a.round - b.round || newestFirst(a, b));
}

/** `agents` agents with up to `perAgent` entries each, at random times (some equal), some not live. */
function snapshot(next: () => number, agents: number, perAgent: number): SnapshotEntry[] {
  const entries: SnapshotEntry[] = [];
  for (let agent = 0; agent < agents; agent++) {
    const count = 1 + Math.floor(next() * perAgent);
    for (let i = 0; i < count; i++) {
      entries.push({
        id: `apr_${String(entries.length).padStart(6, "0")}`,
        clientId: `agent-${agent}`,
        createdAt: new Date(1_800_000_000_000 + Math.floor(next() * 500) * 1000),
        live: next() > 0.2,
      });
    }
  }
  return entries;
}

function positionOf(entry: RankedEntry): RoundPosition {
  return { round: entry.round, createdAt: entry.createdAt, id: entry.id };
}

describe("a pending list's page, ranked from a newest-first reading of its snapshot", () => {
  test("pages walked with their positions give exactly the list by its definition, for 300 random snapshots", async () => {
    for (let seed = 1; seed <= 300; seed++) {
      const next = random(seed);
      const entries = snapshot(next, 1 + Math.floor(next() * 30), 1 + Math.floor(next() * 12));
      const expected = reference(entries);
      const limit = 1 + Math.floor(next() * 20);
      const { read } = source(entries);
      const walked: RankedEntry[] = [];
      let after: RoundPosition | undefined;
      for (let page = 0; page < 1000; page++) {
        const { entries: listed } = await rankPage(read, {
          limit,
          after,
          firstRead: 1 + Math.floor(next() * 8),
        });
        walked.push(...listed);
        const last = listed.at(-1);
        if (listed.length < limit || last === undefined) break;
        after = positionOf(last);
      }
      assert.deepEqual(
        walked.map((entry) => [entry.id, entry.round]),
        expected.map((entry) => [entry.id, entry.round]),
        `seed ${seed}`,
      );
    }
  });

  test("a first page stops reading once its first round fills it: 2,000 agents with 2 each, 51 of 4,000 read in one read of 102", async () => {
    const entries: SnapshotEntry[] = [];
    for (let i = 0; i < 4_000; i++) {
      entries.push({
        id: `apr_${String(i).padStart(6, "0")}`,
        clientId: `agent-${i % 2_000}`,
        createdAt: new Date(1_800_000_000_000 + i * 1000),
        live: true,
      });
    }
    const { read, counter } = source(entries);
    const { entries: listed, read: counted } = await rankPage(read, { limit: 51 });
    assert.deepEqual(
      listed.map((entry) => [entry.id, entry.round]),
      reference(entries)
        .slice(0, 51)
        .map((entry) => [entry.id, entry.round]),
    );
    assert.ok(listed.every((entry) => entry.round === 0));
    assert.deepEqual({ ...counter, counted }, { read: 102, reads: 1, counted: 102 });
  });

  test("one agent's flood, newest of all, costs a first page at most its pending cap in extra rows", async () => {
    // 50 (the cap) from one agent, newest, then one each from 100 others.
    const entries: SnapshotEntry[] = [];
    for (let i = 0; i < 100; i++) {
      entries.push({
        id: `apr_b${String(i).padStart(5, "0")}`,
        clientId: `agent-${i}`,
        createdAt: new Date(1_800_000_000_000 + i * 1000),
        live: true,
      });
    }
    for (let i = 0; i < 50; i++) {
      entries.push({
        id: `apr_f${String(i).padStart(5, "0")}`,
        clientId: "flood",
        createdAt: new Date(1_800_000_200_000 + i * 1000),
        live: true,
      });
    }
    const { read, counter } = source(entries);
    const { entries: listed } = await rankPage(read, { limit: 51, firstRead: 10 });
    assert.equal(listed.length, 51);
    assert.deepEqual(listed[0]?.id, "apr_f00049");
    assert.equal(listed.filter((entry) => entry.clientId === "flood").length, 1);
    // 50 flood rows and 50 others fill round 0 with 51: 100 rows needed, read in 10 + 20 + 40 + 80.
    assert.deepEqual(counter, { read: 150, reads: 4 });
  });

  test("few agents: the page runs past round 0, so the whole snapshot is read, and nothing more", async () => {
    const next = random(7);
    const entries = snapshot(next, 3, 50);
    const { read, counter } = source(entries);
    const { entries: listed } = await rankPage(read, { limit: 51, firstRead: 64 });
    assert.deepEqual(
      listed.map((entry) => entry.id),
      reference(entries)
        .slice(0, 51)
        .map((entry) => entry.id),
    );
    assert.equal(counter.read, entries.length);
  });

  test("one agent with 5,000 pending: pages of 10 walk its rounds in order, each reading the whole snapshot", async () => {
    // One agent, 5,000 entries: 5,000 rounds of one entry; a page of 10 from round 3 on.
    const entries: SnapshotEntry[] = Array.from({ length: 5_000 }, (_, i) => ({
      id: `apr_${String(i).padStart(6, "0")}`,
      clientId: "only",
      createdAt: new Date(1_800_000_000_000 + i * 1000),
      live: true,
    }));
    const { read } = source(entries);
    const first = await rankPage(read, { limit: 10 });
    assert.deepEqual(
      first.entries.map((entry) => entry.round),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    const last = first.entries.at(-1);
    assert.ok(last);
    const second = await rankPage(read, { limit: 10, after: positionOf(last) });
    assert.deepEqual(
      second.entries.map((entry) => entry.round),
      [10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
    );
    assert.equal(second.read, 5_000);
  });

  test("a limit of 0 reads nothing", async () => {
    const { read, counter } = source([{ id: "apr_1", clientId: "a", createdAt: new Date(0), live: true }]);
    assert.deepEqual(await rankPage(read, { limit: 0 }), { entries: [], read: 0 });
    assert.deepEqual(counter, { read: 0, reads: 0 });
  });
});
