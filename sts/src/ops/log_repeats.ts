/**
 * A bound on repeated log lines. Every refusal is logged (token endpoint, approval API, streams,
 * client errors), so without a bound an anonymous caller looping on a refused request writes one log
 * line per request, and a database outage one error line per request. Lines are grouped by what makes
 * them the same line: level, message, and the `event` and `reason` members when present. Each group
 * may write `maxPerWindow` lines per window; past that its lines are counted, and when the window ends
 * one summary line (`log.repeats_suppressed`) says how many were left out. At most `maxGroups` groups
 * are tracked; lines of further groups share one overflow group, so memory stays bounded whatever text
 * a caller can put into a reason.
 */

/** Options of {@link LogRepeats}. */
export interface LogRepeatsOptions {
  /** Most lines per group and window. */
  readonly maxPerWindow: number;
  /** The window, in milliseconds. Default 10,000. */
  readonly windowMs?: number;
  /** Most groups tracked at once. Default {@link MAX_GROUPS}. */
  readonly maxGroups?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly now?: () => number;
  /** Timers for the end-of-window summaries (unref'd by default). */
  readonly timers?: {
    setTimeout(run: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
  };
}

/** What a summary line reports: the group, and how many of its lines were left out. */
export interface SuppressedLines {
  readonly level: number;
  readonly msg: string;
  readonly event: string | null;
  readonly reason: string | null;
  readonly suppressed: number;
  readonly windowSeconds: number;
}

/**
 * A key a log object may carry (`{ [REPEAT_EXEMPT]: true, … }`) to be written whatever the bound: only
 * for lines another limit already bounds per caller (a forwarded MCP call, an allowed forward-auth
 * request: the verifier's per-agent rate limit and the gateway's open-exchange caps). A symbol, so it
 * never appears in the line (pino writes string keys only) and no caller's text can set it.
 */
export const REPEAT_EXEMPT: unique symbol = Symbol("countersign.log.repeat_exempt");

/** Default {@link LogRepeatsOptions.maxGroups}. */
export const MAX_GROUPS = 256;

/** Longest message, event or reason kept in a group's key (and its summary). */
const MAX_KEY_PART = 200;

const OVERFLOW_MSG = "(other log lines past the tracked groups)";

interface Group {
  readonly level: number;
  readonly msg: string;
  readonly event: string | null;
  readonly reason: string | null;
  windowStart: number;
  written: number;
  suppressed: number;
  timer?: unknown;
}

const nodeTimers = {
  setTimeout: (run: () => void, ms: number): unknown => setTimeout(run, ms).unref(),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as NodeJS.Timeout),
};

function part(value: unknown): string | null {
  return typeof value === "string" ? value.slice(0, MAX_KEY_PART) : null;
}

/**
 * Decides, line by line, whether a log line is written, and reports the lines it left out through
 * `report` when their window ends.
 */
export class LogRepeats {
  readonly #maxPerWindow: number;
  readonly #windowMs: number;
  readonly #maxGroups: number;
  readonly #now: () => number;
  readonly #timers: NonNullable<LogRepeatsOptions["timers"]>;
  readonly #groups = new Map<string, Group>();
  readonly #report: (lines: SuppressedLines) => void;
  #lastEviction = Number.NEGATIVE_INFINITY;

  constructor(options: LogRepeatsOptions, report: (lines: SuppressedLines) => void) {
    this.#maxPerWindow = options.maxPerWindow;
    this.#windowMs = options.windowMs ?? 10_000;
    this.#maxGroups = options.maxGroups ?? MAX_GROUPS;
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? nodeTimers;
    this.#report = report;
  }

  /**
   * Whether a line of this level, message and log object is written now.
   * @param fields - the line's log object (its `event` and `reason` members group it), if any.
   */
  admit(level: number, msg: unknown, fields: unknown): boolean {
    const object = typeof fields === "object" && fields !== null ? (fields as Record<string, unknown>) : {};
    if ((object as { [REPEAT_EXEMPT]?: unknown })[REPEAT_EXEMPT] === true) return true;
    const text = part(msg) ?? "";
    const event = part(object.event);
    const reason = part(object.reason);
    const key = `${level}\u0000${text}\u0000${event ?? ""}\u0000${reason ?? ""}`;
    const now = this.#now();
    let group = this.#groups.get(key);
    if (!group) {
      if (this.#groups.size >= this.#maxGroups) this.#evictIdle(now);
      if (this.#groups.size >= this.#maxGroups) return this.#admitOverflow(level, now);
      group = { level, msg: text, event, reason, windowStart: now, written: 0, suppressed: 0 };
      this.#groups.set(key, group);
    }
    return this.#count(group, now);
  }

  /** Reports every group's left-out lines now and stops their timers (on close). */
  flush(): void {
    for (const group of this.#groups.values()) this.#endWindow(group, this.#now());
    this.#groups.clear();
  }

  /**
   * Drops the groups whose window has ended (reporting what they left out), at most once per window,
   * so one-off lines do not hold the places of groups still writing.
   */
  #evictIdle(now: number): void {
    if (now - this.#lastEviction < this.#windowMs) return;
    this.#lastEviction = now;
    for (const [key, group] of this.#groups) {
      if (now - group.windowStart < this.#windowMs) continue;
      this.#endWindow(group, now);
      this.#groups.delete(key);
    }
  }

  #admitOverflow(level: number, now: number): boolean {
    const key = `overflow\u0000${level}`;
    let group = this.#groups.get(key);
    if (!group) {
      // One overflow group per level may exceed maxGroups by the number of levels (six).
      group = {
        level,
        msg: OVERFLOW_MSG,
        event: null,
        reason: null,
        windowStart: now,
        written: 0,
        suppressed: 0,
      };
      this.#groups.set(key, group);
    }
    return this.#count(group, now);
  }

  #count(group: Group, now: number): boolean {
    if (now - group.windowStart >= this.#windowMs) this.#endWindow(group, now);
    if (group.written < this.#maxPerWindow) {
      group.written++;
      return true;
    }
    group.suppressed++;
    if (group.timer === undefined) {
      const remaining = Math.max(0, group.windowStart + this.#windowMs - now);
      group.timer = this.#timers.setTimeout(() => {
        group.timer = undefined;
        this.#endWindow(group, this.#now());
      }, remaining);
    }
    return false;
  }

  #endWindow(group: Group, now: number): void {
    if (group.timer !== undefined) {
      this.#timers.clearTimeout(group.timer);
      group.timer = undefined;
    }
    const suppressed = group.suppressed;
    group.windowStart = now;
    group.written = 0;
    group.suppressed = 0;
    if (suppressed > 0) {
      this.#report({
        level: group.level,
        msg: group.msg,
        event: group.event,
        reason: group.reason,
        suppressed,
        windowSeconds: this.#windowMs / 1000,
      });
    }
  }
}
