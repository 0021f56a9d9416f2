import { z } from "zod";

/**
 * The answers of `GET /revocations` and `GET /revocations/stream` (docs/reference.md#the-revocation-feed),
 * as zod schemas: the OpenAPI document is generated from them and tests parse real answers with them.
 */

const cursor = z
  .string()
  .max(40)
  .regex(/^(?:[0-9a-f]{16}\.)?(?:0|[1-9][0-9]{0,18})$/)
  .describe(
    "A feed position: `<epoch>.<n>` (a plain `<n>` from earlier versions is read as the current epoch).",
  );

/** One entry of the feed. */
export const revocationEntrySchema = z
  .object({
    approval_id: z.string().describe("An approval whose tokens must be refused from now on."),
    revoked_at: z.string().describe("When it was revoked, or when it expired (ISO 8601)."),
    cursor: cursor.describe("Its position, strictly increasing in commit order."),
    reason: z
      .enum(["revoked", "expired"])
      .describe("`revoked` (an approver revoked it) or `expired` (its `expires_at` passed)."),
  })
  .describe("One revoked or expired approval.");

/** A page of the feed. */
export const revocationPageSchema = z
  .object({
    revocations: z.array(revocationEntrySchema).max(500).describe("Entries after `after`, oldest first."),
    cursor: cursor.describe(
      "The last entry's cursor, or the feed's head when the page is empty: the next `after`.",
    ),
    has_more: z.boolean().describe("True when the page is full: ask again at once."),
    low_water: cursor.describe("The largest cursor compacted away: reading after it returns the whole feed."),
  })
  .describe("A page of the revocation feed.");

/** 410: the cursor cannot be continued from. */
export const cursorResetSchema = z
  .object({
    error: z.literal("cursor_reset"),
    error_description: z.string(),
    reason: z
      .enum([
        "cursor_epoch_mismatch",
        "cursor_below_low_water",
        "cursor_ahead_of_head",
        "cursor_beyond_replay",
      ])
      .describe(
        "Why: another epoch (a restore), compacted away, ahead of the head, or (stream) beyond the replay.",
      ),
    cursor: cursor.describe(
      "Where to restart: reading `GET /revocations?after=<cursor>` misses nothing the feed holds.",
    ),
  })
  .describe("The cursor lies outside the feed: restart from `cursor`.");

/** 429 at `GET /revocations`: too many reads from this client address. */
export const feedRateLimitedSchema = z
  .object({
    error: z.literal("slow_down"),
    error_description: z.string(),
    reason: z.literal("feed_rate_limited"),
  })
  .describe(
    "More than `revocations.max_feed_reads_per_address_per_minute` reads from this client address in the current 60-second window.",
  );

/** 429 at `GET /revocations/stream`: this client address holds too many streams, or resumed too often. */
export const tooManyStreamsSchema = z
  .object({
    error: z.literal("too_many_streams"),
    error_description: z.string(),
    reason: z
      .enum(["streams_per_address_reached", "replay_rate_limited"])
      .describe(
        "`streams_per_address_reached`: this client address holds `revocations.max_streams_per_address` " +
          "streams. `replay_rate_limited`: it used its replays (`revocations.max_replays_per_address_per_minute`): " +
          "resuming with a backlog, or with a cursor ahead of the instance's head or of another epoch " +
          "(which makes the instance re-read the feed), costs one.",
      ),
  })
  .describe("Too many streams, or too many resumptions, from this client address: wait `Retry-After`.");

/** 503 at `GET /revocations/stream`: every stream slot of this instance is taken. */
export const streamsFullSchema = z
  .object({
    error: z.literal("temporarily_unavailable"),
    error_description: z.string(),
    reason: z.literal("stream_subscribers_reached"),
  })
  .describe("This instance holds `revocations.max_stream_subscribers` streams: wait `Retry-After`.");

/** The body of a refusal of the feed or the stream that asks the caller to wait (429, 503). */
export type WaitRefusal =
  | z.infer<typeof feedRateLimitedSchema>
  | z.infer<typeof tooManyStreamsSchema>
  | z.infer<typeof streamsFullSchema>;
