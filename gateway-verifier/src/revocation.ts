import { VerifierBackgroundError } from "./background_error.js";
import {
  describeUrl,
  FetchFailure,
  networkFailure,
  readJsonBody,
  requestJson,
  retryAfterMs,
} from "./http_fetch.js";
import type { RevocationOptions } from "./types.js";

/** One entry of the feed (docs/reference.md#the-revocation-feed). */
export interface RevocationEntry {
  approval_id: string;
  revoked_at: string;
  cursor: string;
}

/**
 * The set of revoked approval ids, fed by one or more sources (the polled feed and the SSE stream).
 * Bounded: an entry is dropped once no token tied to it can be valid any more, and past `maxEntries`
 * the one added longest ago goes first, even while tokens tied to it may still be valid: those are
 * then accepted again (fail open for that approval). {@link dropped} counts such drops.
 */
export class RevocationList {
  readonly #revoked = new Map<string, number>();
  #syncedAt = Number.NEGATIVE_INFINITY;
  #attempted = false;
  #dropped = 0;
  readonly #retainMs: number;
  readonly #maxEntries: number;

  /**
   * @param retainMs how long after `revoked_at` an entry is kept, in milliseconds (the longest a token
   *   may live: maxTokenAgeSeconds + clock tolerance).
   */
  constructor(retainMs: number, maxEntries: number) {
    this.#retainMs = retainMs;
    this.#maxEntries = maxEntries;
  }

  has(approvalId: string): boolean {
    return this.#revoked.has(approvalId);
  }

  get size(): number {
    return this.#revoked.size;
  }

  /** The most entries kept (`revocation.maxEntries`). */
  get maxEntries(): number {
    return this.#maxEntries;
  }

  /**
   * How many entries still in force (tokens tied to them may still be valid) were dropped to stay
   * within `maxEntries`, since the list was made.
   */
  get dropped(): number {
    return this.#dropped;
  }

  /** Milliseconds-since-epoch of the last successful sync (−∞ before the first). */
  get syncedAt(): number {
    return this.#syncedAt;
  }

  /** Whether a sync has succeeded at least once. */
  get synced(): boolean {
    return this.#syncedAt !== Number.NEGATIVE_INFINITY;
  }

  /** Whether a sync has been attempted (successfully or not). */
  get attempted(): boolean {
    return this.#attempted;
  }

  add(entry: RevocationEntry, nowMs: number): void {
    const parsed = Date.parse(entry.revoked_at);
    // An unparseable time is kept as if revoked now: longer, never shorter.
    const revokedAt = Number.isFinite(parsed) ? parsed : nowMs;
    if (revokedAt + this.#retainMs < nowMs) return;
    this.#revoked.delete(entry.approval_id);
    this.#revoked.set(entry.approval_id, revokedAt);
    if (this.#revoked.size > this.#maxEntries) {
      const oldest = this.#revoked.entries().next();
      if (oldest.done !== true) {
        const [id, oldestRevokedAt] = oldest.value;
        this.#revoked.delete(id);
        if (oldestRevokedAt + this.#retainMs >= nowMs) this.#dropped++;
      }
    }
  }

  markSynced(nowMs: number): void {
    this.#syncedAt = nowMs;
    this.#attempted = true;
  }

  markFailed(): void {
    this.#attempted = true;
  }

  prune(nowMs: number): void {
    for (const [id, revokedAt] of this.#revoked) {
      if (revokedAt + this.#retainMs < nowMs) this.#revoked.delete(id);
    }
  }
}

const MAX_ID_LENGTH = 512;

function parseEntry(value: unknown): RevocationEntry | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { approval_id, revoked_at, cursor } = value as Record<string, unknown>;
  if (typeof approval_id !== "string" || approval_id.length === 0 || approval_id.length > MAX_ID_LENGTH) {
    return undefined;
  }
  const at = typeof revoked_at === "string" ? revoked_at : "";
  const position = typeof cursor === "string" || typeof cursor === "number" ? String(cursor) : "";
  return { approval_id, revoked_at: at, cursor: position };
}

/** Parses one feed page; throws when it does not have the feed's shape (docs/reference.md#the-revocation-feed). */
export function parseFeedPage(body: unknown): { entries: RevocationEntry[]; cursor: string | undefined } {
  if (typeof body !== "object" || body === null) throw new Error("revocation feed: not an object");
  const { revocations, cursor } = body as Record<string, unknown>;
  if (!Array.isArray(revocations)) throw new Error("revocation feed: no revocations array");
  const entries: RevocationEntry[] = [];
  for (const item of revocations) {
    const entry = parseEntry(item);
    if (entry === undefined) throw new Error("revocation feed: malformed entry");
    entries.push(entry);
  }
  const next =
    typeof cursor === "string" || typeof cursor === "number" ? String(cursor) : entries.at(-1)?.cursor;
  return { entries, cursor: next };
}

/** Most 410 `cursor_reset` answers followed in one poll; one more fails the poll. */
const MAX_RESETS_PER_POLL = 3;
/** Largest accepted 410 body, in bytes. */
const MAX_RESET_BYTES = 16 * 1024;

/**
 * Parses a 410 body: `{"error": "cursor_reset", "cursor": "<where to restart>", …}` (the feed no longer
 * holds what follows our cursor: another epoch after a restore, compacted, or ahead of the feed's head).
 * @returns where to restart (undefined: from the start of the feed's current snapshot).
 * @throws when it is not a `cursor_reset` answer.
 */
export function parseCursorReset(body: unknown): { cursor: string | undefined } {
  if (typeof body !== "object" || body === null) throw new Error("revocation feed: 410 without a body");
  const { error, cursor } = body as Record<string, unknown>;
  if (error !== "cursor_reset") throw new Error("revocation feed: 410 that is not cursor_reset");
  if (cursor === undefined) return { cursor: undefined };
  if (typeof cursor !== "string" || !/^[\x21-\x7e]{1,512}$/.test(cursor)) {
    throw new Error("revocation feed: cursor_reset with a malformed cursor");
  }
  return { cursor };
}

/** One answer of the feed: a page, or a 410 `cursor_reset` saying where to restart. */
export type FeedAnswer =
  | { readonly page: { entries: RevocationEntry[]; cursor: string | undefined } }
  | { readonly reset: { cursor: string | undefined } };

/**
 * A {@link FetchFailure} for an answer that is not a page: with `retryAfterMs` when it is a 429 (its
 * RFC 9110 §10.2.3 `Retry-After`, else `fallbackMs`) or a 503 with `Retry-After`.
 */
async function httpFailure(response: Response, url: string, fallbackMs: number): Promise<FetchFailure> {
  await response.body?.cancel();
  const header = response.headers.get("retry-after");
  const wait =
    response.status === 429 || (response.status === 503 && header !== null)
      ? retryAfterMs(header, Date.now(), fallbackMs)
      : undefined;
  return new FetchFailure("http_error", `GET ${describeUrl(url)} answered ${response.status}`, {
    status: response.status,
    ...(wait === undefined ? {} : { retryAfterMs: wait }),
  });
}

/**
 * `GET url` of the feed: a page (200), a reset (410 `cursor_reset`); throws on anything else (a 429 with
 * the wait the server asked for, `fallbackRetryMs` when it named none; a 503 with its `Retry-After`).
 */
export async function fetchFeedPage(
  url: string,
  timeoutMs: number,
  maxBytes: number,
  fallbackRetryMs = 5_000,
): Promise<FeedAnswer> {
  const response = await requestJson(url, timeoutMs);
  if (response.status === 410) {
    return {
      reset: parseCursorReset(await readJsonBody(response, url, Math.min(maxBytes, MAX_RESET_BYTES))),
    };
  }
  if (!response.ok) throw await httpFailure(response, url, fallbackRetryMs);
  return { page: parseFeedPage(await readJsonBody(response, url, maxBytes)) };
}

/** A feed consumer. Polling is the one built in; an SSE consumer implements the same interface. */
export interface RevocationSource {
  /** Resolves after the first sync attempt (success or failure). */
  readonly initial: Promise<void>;
  /** Syncs now (or waits for the sync in progress); resolves when it has been attempted. */
  refresh(): Promise<void>;
  close(): void;
}

/**
 * Polls `GET <url>?after=<cursor>` (docs/reference.md#the-revocation-feed) every `intervalMs`, following pages until one is
 * empty, into `list`. A 410 `cursor_reset` (the feed was restored, replaced or compacted past our
 * cursor) is followed by itself: the poll continues from the cursor the answer gives, reading the feed's
 * current snapshot, and the list is marked synced only once that read is complete (entries already in
 * the list are kept: a revocation is never forgotten early). A 429 or 503 is honoured: no request is
 * sent (polls and `refresh()` alike) until its `Retry-After` (at most 10 minutes; without one, the
 * larger of `intervalMs` and 5 s) has passed. The list is not synced meanwhile, so past
 * `maxStalenessMs` tokens are refused (fail closed), never accepted unchecked. After each poll, entries
 * still in force that the list dropped past `maxEntries` since the last report (by the poll or the
 * stream) are reported once, as `revocation_list_full`.
 */
export function pollRevocationFeed(
  list: RevocationList,
  options: RevocationOptions,
  now: () => number,
  onError: (error: VerifierBackgroundError) => void,
): RevocationSource {
  const intervalMs = options.intervalMs ?? 5_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxBytes = options.maxResponseBytes ?? 4 * 1024 * 1024;
  const maxPages = options.maxPagesPerPoll ?? 100;
  let cursor: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let running: Promise<boolean> | undefined;
  /** `Date.now()` before which no request is sent (the server's `Retry-After`). */
  let holdUntil = 0;
  const fallbackRetryMs = Math.max(intervalMs, 5_000);

  /** `list.dropped` when last reported. */
  let droppedReported = 0;

  /**
   * Reports `revocation_list_full` when entries still in force were dropped (by this poll, or by the
   * stream since the last poll): at most once per poll, with how many since the last report.
   */
  function reportDrops(): void {
    const dropped = list.dropped - droppedReported;
    if (dropped <= 0) return;
    droppedReported = list.dropped;
    onError(
      new VerifierBackgroundError(
        "revocation_list_full",
        "revocation",
        "list_full",
        `revocation list full: ${dropped} revocation${dropped === 1 ? "" : "s"} still in force dropped ` +
          `(those added longest ago) to stay within revocation.maxEntries (${list.maxEntries}); tokens ` +
          "of those approvals are accepted again until they expire: raise revocation.maxEntries",
      ),
    );
  }

  /** Resolves true when more pages remain. */
  async function pollOnce(): Promise<boolean> {
    try {
      return await syncOnce();
    } finally {
      reportDrops();
    }
  }

  /** One poll: resolves true when more pages remain. */
  async function syncOnce(): Promise<boolean> {
    if (Date.now() < holdUntil) return false;
    try {
      let resets = 0;
      for (let page = 0; page < maxPages; page++) {
        const url = new URL(options.url);
        if (cursor !== undefined) url.searchParams.set("after", cursor);
        const answer = await fetchFeedPage(url.href, timeoutMs, maxBytes, fallbackRetryMs);
        if ("reset" in answer) {
          resets++;
          if (resets > MAX_RESETS_PER_POLL) {
            throw new Error(`revocation feed: cursor reset ${resets} times in one poll`);
          }
          cursor = answer.reset.cursor;
          continue;
        }
        const { entries, cursor: latest } = answer.page;
        const at = now();
        for (const entry of entries) list.add(entry, at);
        // Continue after the last entry seen; the page's cursor when the page is empty.
        const next = entries.length > 0 ? (entries.at(-1)?.cursor ?? latest) : latest;
        const advanced = next !== undefined && next !== "" && next !== cursor;
        if (advanced) cursor = next;
        if (entries.length === 0 || !advanced) {
          list.prune(at);
          list.markSynced(at);
          return false;
        }
      }
      // More pages remain: the list is behind, so it is not marked synced; the next poll continues.
      list.markFailed();
      return true;
    } catch (error) {
      list.markFailed();
      if (error instanceof FetchFailure && error.retryAfterMs !== undefined) {
        holdUntil = Date.now() + error.retryAfterMs;
      }
      onError(VerifierBackgroundError.from("revocation_poll_failed", "revocation", error));
      return false;
    }
  }

  function poll(): Promise<boolean> {
    if (running === undefined) {
      const current = pollOnce().finally(() => {
        if (running === current) running = undefined;
      });
      running = current;
    }
    return running;
  }

  function schedule(more: boolean): void {
    if (closed) return;
    timer = setTimeout(
      () => {
        void poll().then(schedule);
      },
      more ? 0 : Math.max(intervalMs, holdUntil - Date.now()),
    );
    timer.unref();
  }

  const initial = poll().then(schedule);
  return {
    initial,
    refresh() {
      if (running !== undefined) return running.then(() => undefined);
      if (closed) return Promise.resolve();
      if (timer !== undefined) clearTimeout(timer);
      return poll().then(schedule);
    },
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

const MAX_EVENT_BYTES = 64 * 1024;

/**
 * Parses a text/event-stream body (HTML Living Standard §9.2.6) into `data` payloads, calling `onEvent`
 * with each event's data and id. An event (or an unfinished line) larger than 64 KiB aborts the stream.
 */
export async function readEventStream(
  body: AsyncIterable<Uint8Array>,
  onEvent: (data: string, id: string | undefined) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let buffer = "";
  let data: string[] = [];
  let dataLength = 0;
  let id: string | undefined;
  function drain(final: boolean): void {
    let newline = buffer.search(/\r\n|\r|\n/);
    // A CR at the end of a chunk may be the first half of a CRLF: wait for the next chunk.
    while (newline >= 0 && (final || !(newline === buffer.length - 1 && buffer[newline] === "\r"))) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (line === "") {
        if (data.length > 0) onEvent(data.join("\n"), id);
        data = [];
        dataLength = 0;
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") {
          dataLength += value.length + 1;
          if (dataLength > MAX_EVENT_BYTES) throw new FetchFailure("response_too_large", "event too large");
          data.push(value);
        } else if (field === "id") id = value;
      }
      newline = buffer.search(/\r\n|\r|\n/);
    }
  }
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    drain(false);
    // What is left is one unfinished line: bounded. (Checked after draining: one chunk may hold many
    // small events, as a replay's burst does, and is no larger than the transport delivered.)
    if (buffer.length > MAX_EVENT_BYTES) throw new FetchFailure("response_too_large", "event too large");
  }
  drain(true);
}

/**
 * Listens to the push variant of the feed, `GET <url>/stream` (server-sent events whose `data` is one
 * revocation object), and adds each revocation at once. It only speeds revocations up: the polled feed
 * stays the source of truth for freshness (`maxStalenessMs`). Reconnects with backoff (1 s to 30 s,
 * or longer when a 429 or 503 asks for it in `Retry-After`), resuming after the last event's id; when that
 * id is no longer in the feed (410 `cursor_reset`) it resumes live, without one.
 */
export function streamRevocations(
  list: RevocationList,
  url: string,
  now: () => number,
  onError: (error: VerifierBackgroundError) => void,
): { close(): void } {
  const streamUrl = `${url.replace(/\/+$/, "")}/stream`;
  let controller: AbortController | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let lastId: string | undefined;
  let backoffMs = 1_000;

  async function connect(): Promise<void> {
    controller = new AbortController();
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (lastId !== undefined) headers["last-event-id"] = lastId;
    let response: Response;
    try {
      response = await fetch(streamUrl, { headers, redirect: "error", signal: controller.signal });
    } catch (error) {
      throw networkFailure(streamUrl, error);
    }
    if (response.status === 410) {
      // Our Last-Event-ID is no longer in the feed (restored, compacted, or beyond the replay): resume
      // live; the polled feed resynchronises the list.
      await response.body?.cancel();
      lastId = undefined;
      backoffMs = 1_000;
      return;
    }
    if (!response.ok || response.body === null) throw await httpFailure(response, streamUrl, backoffMs);
    backoffMs = 1_000;
    try {
      await readEventStream(response.body, (data, id) => {
        if (id !== undefined) lastId = id;
        let entry: RevocationEntry | undefined;
        try {
          entry = parseEntry(JSON.parse(data));
        } catch {
          entry = undefined;
        }
        if (entry !== undefined) list.add(entry, now());
        else {
          const malformed = new FetchFailure("invalid_response", "malformed event");
          onError(VerifierBackgroundError.from("revocation_stream_failed", "revocation", malformed));
        }
      });
    } catch (error) {
      throw networkFailure(streamUrl, error);
    }
  }

  function run(): void {
    if (closed) return;
    connect().then(
      () => schedule(),
      (error: unknown) => {
        if (!closed) onError(VerifierBackgroundError.from("revocation_stream_failed", "revocation", error));
        schedule(error instanceof FetchFailure ? error.retryAfterMs : undefined);
      },
    );
  }

  function schedule(retryAfter?: number): void {
    if (closed) return;
    timer = setTimeout(run, Math.max(backoffMs, retryAfter ?? 0));
    timer.unref();
    backoffMs = Math.min(30_000, backoffMs * 2);
  }

  run();
  return {
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      controller?.abort();
    },
  };
}

/** The revocation feed as the per-request check reads it. */
export interface RevocationState {
  list: RevocationList;
  source: RevocationSource;
  /** Refuse every token when the last successful sync is older than this, in milliseconds. */
  maxStalenessMs: number;
}

/**
 * Starts following the revocation feed for a verifier: polling (and the SSE stream when
 * `options.stream`), into a list that keeps an entry `retainMs` after its `revoked_at`.
 */
export function startRevocationFeed(
  options: RevocationOptions,
  retainMs: number,
  now: () => number,
  onError: (error: VerifierBackgroundError) => void,
): RevocationState & { options: RevocationOptions; close(): void } {
  const intervalMs = options.intervalMs ?? 5_000;
  const list = new RevocationList(retainMs, options.maxEntries ?? 1_000_000);
  const source = pollRevocationFeed(list, options, now, onError);
  const stream = options.stream === true ? streamRevocations(list, options.url, now, onError) : undefined;
  return {
    options,
    list,
    source,
    maxStalenessMs: options.maxStalenessMs ?? Math.max(30_000, 6 * intervalMs),
    close() {
      source.close();
      stream?.close();
    },
  };
}
