import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import { describe, test } from "node:test";
import { ReplayScheduler } from "../../../sts/src/revocations/replay.js";

/** The part of a ServerResponse the scheduler uses, recording every write into `log`. */
class FakeResponse extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  writableEnded = false;
  constructor(
    readonly log: string[],
    readonly onWrite: (self: FakeResponse) => void = () => {},
  ) {
    super();
  }
  write(chunk: Buffer): boolean {
    this.log.push(chunk.toString());
    this.onWrite(this);
    return true;
  }
  get response(): ServerResponse {
    return this as unknown as ServerResponse;
  }
}

const pieces = (...texts: string[]) => texts.map((text) => Buffer.from(text));

describe("revocation replay scheduler", () => {
  test("replays are written round-robin, a piece at a time, each in order; each resolves with its pieces written", async () => {
    const log: string[] = [];
    const scheduler = new ReplayScheduler({ sliceMs: 1000 });
    const a = scheduler.replay(new FakeResponse(log).response, pieces("a1", "a2", "a3"));
    const b = scheduler.replay(new FakeResponse(log).response, pieces("b1", "b2"));
    assert.equal(scheduler.active, 2);
    assert.deepEqual(await Promise.all([a, b]), [3, 2]);
    assert.deepEqual(log, ["a1", "b1", "a2", "b2", "a3"]);
    assert.equal(scheduler.active, 0);
    assert.equal(await scheduler.replay(new FakeResponse(log).response, []), 0);
  });

  test("a response closed mid-replay ends its replay with what was written; the others go on", async () => {
    const log: string[] = [];
    const scheduler = new ReplayScheduler({ sliceMs: 1000 });
    const closing = new FakeResponse(log, (self) => {
      self.destroyed = true;
    });
    const a = scheduler.replay(closing.response, pieces("a1", "a2", "a3"));
    const b = scheduler.replay(new FakeResponse(log).response, pieces("b1", "b2"));
    assert.deepEqual(await Promise.all([a, b]), [1, 2]);
    assert.deepEqual(log, ["a1", "b1", "b2"]);
  });

  test("a response holding more than highWaterBytes waits for drain without holding the others back", async () => {
    const log: string[] = [];
    const scheduler = new ReplayScheduler({ sliceMs: 1000, highWaterBytes: 10 });
    // Its first write fills its buffer, until the test drains it.
    let filled = false;
    const full = new FakeResponse(log, (self) => {
      if (filled) return;
      filled = true;
      self.writableLength = 11;
    });
    const a = scheduler.replay(full.response, pieces("a1", "a2", "a3"));
    const b = scheduler.replay(new FakeResponse(log).response, pieces("b1", "b2", "b3"));
    assert.equal(await b, 3);
    assert.deepEqual(log, ["a1", "b1", "b2", "b3"]);
    full.writableLength = 0;
    full.emit("drain");
    assert.equal(await a, 3);
    assert.deepEqual(log, ["a1", "b1", "b2", "b3", "a2", "a3"]);
  });
});
