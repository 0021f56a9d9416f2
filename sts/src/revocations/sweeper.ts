import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** Most expiries one sweep writes; the rest follow at the next sweep. */
export const SWEEP_BATCH = 1000;

/** Most entries one compaction statement deletes. */
export const COMPACTION_BATCH = 1000;

/** Most compaction statements per sweep: a sweep compacts at most 10 × {@link COMPACTION_BATCH} entries. */
export const COMPACTION_BATCHES_PER_SWEEP = 10;

/**
 * Writes an `expired` feed entry (revoked_at = `expires_at`) for every approved approval that minted at
 * least one token, whose `expires_at` has passed less than `graceSeconds` ago, and that is not in the
 * feed yet, oldest first, at most {@link SWEEP_BATCH}. An approval that never minted a token (pending
 * ones included) needs no entry: no gateway can see a token of it. One that expired longer ago than
 * `graceSeconds` needs none either: its tokens (which never outlive it) are dead to every gateway, and
 * its entry would be compacted at once (so the sweeper never writes back an entry compaction removed).
 * Idempotent and safe with several instances sweeping at once (`ON CONFLICT (approval_id) DO NOTHING`).
 * @param graceSeconds - `revocations.compaction_grace_seconds`.
 * @returns the approval ids written by this sweep.
 */
export async function sweepExpiredApprovals(db: Kysely<Database>, graceSeconds: number): Promise<string[]> {
  const { rows } = await sql<{ approval_id: string }>`
    insert into revocations (approval_id, reason, revoked_at)
    select a.id, 'expired', a.expires_at
    from approvals a
    where a.status = 'approved'
      and a.tokens_issued > 0
      and a.expires_at <= now()
      and a.expires_at > now() - make_interval(secs => ${graceSeconds})
      and not exists (select 1 from revocations r where r.approval_id = a.id)
    order by a.expires_at
    limit ${SWEEP_BATCH}
    on conflict (approval_id) do nothing
    returning approval_id`.execute(db);
  return rows.map((row) => row.approval_id);
}

/** Options of {@link compactFeed}. */
export interface CompactionOptions {
  /**
   * How long an entry is kept after its `needed_until`, in seconds
   * (`revocations.compaction_grace_seconds`): at least the largest clock tolerance of any gateway.
   */
  readonly graceSeconds: number;
  /**
   * `tokens.max_ttl_seconds`: bounds the tokens of an entry whose `issued_tokens` rows are gone
   * (`needed_until` NULL) to `revoked_at` + this, and never past the approval's `expires_at`.
   */
  readonly maxTokenTtlSeconds: number;
  /** Most entries deleted per statement. Default {@link COMPACTION_BATCH}. */
  readonly batch?: number;
  /** Most statements. Default {@link COMPACTION_BATCHES_PER_SWEEP}. */
  readonly batches?: number;
}

/**
 * Removes feed entries no gateway needs any more, oldest first: the longest run of entries, in cursor
 * order, whose `needed_until` (fixed when the entry was written: the later of that moment and the last
 * `exp` of the approval's tokens; when NULL, the approval's `expires_at` capped at `revoked_at` +
 * `maxTokenTtlSeconds`) is more than `graceSeconds` in the past. Only a prefix is removed, so the feed
 * always holds every entry above `revocation_feed.compacted_through` (the low-water mark), which each
 * statement raises to the largest cursor it removed, in the same transaction. A statement looks at the
 * `batch` oldest entries; at most `batches` statements run. Every entry is kept at least `graceSeconds`
 * after it was written (a gateway polling more often than that never finds its cursor compacted past)
 * and becomes removable within `tokens.max_ttl_seconds` + `graceSeconds` of it, so the feed holds about
 * that long a window of revocations. Safe with several instances compacting at once (an entry another
 * instance removed first is skipped).
 * @returns how many entries were removed.
 */
export async function compactFeed(db: Kysely<Database>, options: CompactionOptions): Promise<number> {
  const batch = options.batch ?? COMPACTION_BATCH;
  const batches = options.batches ?? COMPACTION_BATCHES_PER_SWEEP;
  let removed = 0;
  for (let i = 0; i < batches; i++) {
    const count = await db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ cursor: string }>`
        with oldest as (
          select r."cursor",
            coalesce(r.needed_until,
              least(a.expires_at, r.revoked_at + make_interval(secs => ${options.maxTokenTtlSeconds})))
              < now() - make_interval(secs => ${options.graceSeconds}) as done
          from revocations r join approvals a on a.id = r.approval_id
          order by r."cursor"
          limit ${batch}
        )
        delete from revocations r
        where r."cursor" in (
          select o."cursor" from oldest o
          where o."cursor" < coalesce((select min(n."cursor") from oldest n where not n.done),
            9223372036854775807)
        )
        returning r."cursor"::text as "cursor"`.execute(trx);
      if (rows.length === 0) return 0;
      let highest = 0n;
      for (const row of rows) {
        const cursor = BigInt(row.cursor);
        if (cursor > highest) highest = cursor;
      }
      await trx
        .updateTable("revocation_feed")
        .set({ compacted_through: sql<string>`greatest(compacted_through, ${highest.toString()}::bigint)` })
        .execute();
      return rows.length;
    });
    removed += count;
    if (count < batch) break;
  }
  return removed;
}
