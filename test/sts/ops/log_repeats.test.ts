import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createLogger, flushRepeatedLines, REPEAT_EXEMPT } from "../../../sts/src/ops/logger.js";
import { LogCapture } from "../../helpers/app.js";

/** A clock and timers the test moves by hand. */
function manualTime() {
  let now = 1_000_000;
  const pending = new Map<number, { at: number; run: () => void }>();
  let next = 0;
  return {
    now: () => now,
    timers: {
      setTimeout(run: () => void, ms: number): unknown {
        const id = next++;
        pending.set(id, { at: now + ms, run });
        return id;
      },
      clearTimeout(handle: unknown): void {
        pending.delete(handle as number);
      },
    },
    /** Moves the clock and runs the timers that came due. */
    advance(ms: number): void {
      now += ms;
      for (const [id, timer] of [...pending]) {
        if (timer.at > now) continue;
        pending.delete(id);
        timer.run();
      }
    },
    get timerCount(): number {
      return pending.size;
    },
  };
}

function parsed(capture: LogCapture): Record<string, unknown>[] {
  return capture.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe("repeated log lines are bounded", () => {
  test("past maxRepeats lines of one kind in a window, the rest are counted into one summary line when the window ends", () => {
    const time = manualTime();
    const capture = new LogCapture();
    const logger = createLogger("info", capture, { maxRepeats: 3, now: time.now, timers: time.timers });
    for (let i = 0; i < 10; i++) logger.info({ reason: "token_invalid", attempt: i }, "approval api refusal");
    // Another reason, event, message or level is another kind of line, with its own allowance.
    logger.info({ reason: "token_expired" }, "approval api refusal");
    logger.warn({ reason: "token_invalid" }, "approval api refusal");
    logger.info("approval api refusal");
    assert.deepEqual(
      parsed(capture).map((line) => [line.level, line.reason ?? null, line.attempt ?? null]),
      [
        [30, "token_invalid", 0],
        [30, "token_invalid", 1],
        [30, "token_invalid", 2],
        [30, "token_expired", null],
        [40, "token_invalid", null],
        [30, null, null],
      ],
    );
    assert.equal(time.timerCount, 1);
    time.advance(9_999);
    assert.equal(capture.lines.length, 6);
    time.advance(1);
    const summary = parsed(capture)[6];
    assert.equal(summary?.msg, "repeated log lines left out");
    assert.equal(summary?.level, 30);
    assert.equal(summary?.event, "log.repeats_suppressed");
    assert.deepEqual(summary?.repeated, {
      msg: "approval api refusal",
      event: null,
      reason: "token_invalid",
    });
    assert.equal(summary?.suppressed, 7);
    assert.equal(summary?.window_seconds, 10);
    assert.equal(capture.lines.length, 7);
    // A new window: three more lines are written.
    for (let i = 0; i < 5; i++) logger.info({ reason: "token_invalid" }, "approval api refusal");
    assert.equal(capture.lines.length, 10);
    // Shutdown writes the open window's count at once.
    flushRepeatedLines(logger);
    assert.equal(capture.lines.length, 11);
    assert.equal(parsed(capture)[10]?.suppressed, 2);
    assert.equal(time.timerCount, 0);
  });

  test("an anonymous caller's 1,000 refusals with 1,000 different reasons write maxGroups + maxRepeats lines, the rest counted", () => {
    const time = manualTime();
    const capture = new LogCapture();
    const logger = createLogger("info", capture, {
      maxRepeats: 2,
      maxGroups: 8,
      now: time.now,
      timers: time.timers,
    });
    for (let i = 0; i < 1_000; i++) logger.info({ reason: `crafted_${i}` }, "client request refused");
    // Eight kinds tracked (one line each), then one overflow kind shared by every other: two lines.
    assert.equal(capture.lines.length, 10);
    time.advance(10_000);
    const summaries = parsed(capture).filter((line) => line.event === "log.repeats_suppressed");
    assert.deepEqual(
      summaries.map((line) => [line.repeated, line.suppressed]),
      [[{ msg: "(other log lines past the tracked groups)", event: null, reason: null }, 990]],
    );
    // Once their windows have ended, idle kinds make room for new ones.
    logger.info({ reason: "fresh" }, "client request refused");
    assert.equal(parsed(capture).at(-1)?.reason, "fresh");
  });

  test("a line marked REPEAT_EXEMPT (bounded elsewhere) is always written, and the mark never shows in it", () => {
    const time = manualTime();
    const capture = new LogCapture();
    const logger = createLogger("info", capture, { maxRepeats: 2, now: time.now, timers: time.timers });
    for (let i = 0; i < 5; i++)
      logger.info({ [REPEAT_EXEMPT]: true, event: "mcp.decision", n: i }, "mcp forwarded");
    for (let i = 0; i < 5; i++)
      logger.info({ event: "mcp.decision", reason: "token_missing" }, "mcp refused");
    // A string key of the same name is a caller's text, not the mark.
    for (let i = 0; i < 5; i++) logger.info({ [String(REPEAT_EXEMPT)]: true, event: "x" }, "not exempt");
    assert.deepEqual(
      parsed(capture).map((line) => [line.msg, line.n ?? null]),
      [
        ["mcp forwarded", 0],
        ["mcp forwarded", 1],
        ["mcp forwarded", 2],
        ["mcp forwarded", 3],
        ["mcp forwarded", 4],
        ["mcp refused", null],
        ["mcp refused", null],
        ["not exempt", null],
        ["not exempt", null],
      ],
    );
    for (const line of capture.lines.slice(0, 5)) assert.ok(!line.includes("repeat_exempt"), line);
  });

  test("a reason or message of any length is kept to 200 characters in the summary", () => {
    const time = manualTime();
    const capture = new LogCapture();
    const logger = createLogger("info", capture, { maxRepeats: 1, now: time.now, timers: time.timers });
    const long = "x".repeat(100_000);
    logger.info({ reason: long }, long);
    logger.info({ reason: long }, long);
    time.advance(10_000);
    const summary = parsed(capture)[1];
    assert.deepEqual(summary?.repeated, { msg: "x".repeat(200), event: null, reason: "x".repeat(200) });
    assert.equal(summary?.suppressed, 1);
  });
});
