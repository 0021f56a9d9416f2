/**
 * Ranking a pending list round by round, from a newest-first reading of its snapshot.
 *
 * An approval's round is how many approvals of its agent in the snapshot are newer. The list is ordered
 * by (round, newest first): round 0 holds every agent's newest request, round 1 every agent's second
 * newest, and so on. Reading the snapshot newest first gives every approval its round as it is read (a
 * count per agent), and within one round the reading order is the list's order. So a page whose rows
 * all fall in its first round is known as soon as that many rows of the round have been read: a first
 * page of `limit` rows reads at most about `limit` × (most pending per agent) rows, however many
 * approvals are pending. Only a page that runs past the end of a round has to read the snapshot to its
 * end (a row of that round may be the oldest of all).
 */

/** One approval of a pending list's snapshot, as the ranking needs it. */
export interface SnapshotEntry {
  readonly id: string;
  readonly clientId: string;
  readonly createdAt: Date;
  /** Still pending and unexpired now: listed. The others only count towards their agent's rounds. */
  readonly live: boolean;
}

/** A snapshot entry with its round. */
export interface RankedEntry extends SnapshotEntry {
  readonly round: number;
}

/** Where a page starts: after this entry of the list. */
export interface RoundPosition {
  readonly round: number;
  readonly createdAt: Date;
  readonly id: string;
}

/**
 * Reads the snapshot newest first (`created_at` then `id`, both descending): at most `count` entries
 * strictly older than `before`, or the newest when `before` is undefined. Fewer than `count` means the
 * end was reached.
 */
export type ReadOlder = (
  before: Pick<SnapshotEntry, "createdAt" | "id"> | undefined,
  count: number,
) => Promise<readonly SnapshotEntry[]>;

/** Options of {@link rankPage}. */
export interface RankPageOptions {
  /** Entries wanted. */
  readonly limit: number;
  /** Start after this position (a later page). */
  readonly after?: RoundPosition | undefined;
  /** Entries read by the first read (default: twice `limit`, at least 64); each further read doubles. */
  readonly firstRead?: number;
  /** Most entries one read asks for (default 2,000). */
  readonly maxRead?: number;
}

/** What {@link rankPage} found: the page, and how many snapshot entries it read for it. */
export interface RankedPage {
  readonly entries: readonly RankedEntry[];
  readonly read: number;
}

/**
 * Whether `entry` comes after `position` within one round: older, or as old with a smaller id. Ids
 * compare by code unit, as `read` orders them (SQL's `collate "C"`: approval ids are ASCII).
 */
function isOlder(
  entry: Pick<SnapshotEntry, "createdAt" | "id">,
  position: Pick<RoundPosition, "createdAt" | "id">,
) {
  const a = entry.createdAt.getTime();
  const b = position.createdAt.getTime();
  return a < b || (a === b && entry.id < position.id);
}

/**
 * The live entries of a pending list after `after`, at most `limit`, in list order (round, then newest
 * first), read from the snapshot newest first through `read`. Memory: one counter per agent read, and at
 * most `limit` entries per round.
 */
export async function rankPage(read: ReadOlder, options: RankPageOptions): Promise<RankedPage> {
  const { limit, after } = options;
  if (limit <= 0) return { entries: [], read: 0 };
  const startRound = after?.round ?? 0;
  const maxRead = options.maxRead ?? 2_000;
  let count = Math.min(maxRead, options.firstRead ?? Math.max(64, 2 * limit));
  const rounds = new Map<string, number>();
  const byRound: RankedEntry[][] = [];
  let total = 0;
  let before: SnapshotEntry | undefined;
  for (;;) {
    const batch = await read(before, count);
    total += batch.length;
    for (const entry of batch) {
      const round = rounds.get(entry.clientId) ?? 0;
      rounds.set(entry.clientId, round + 1);
      if (!entry.live || round < startRound) continue;
      if (round === startRound && after !== undefined && !isOlder(entry, after)) continue;
      const slot = round - startRound;
      const listed = byRound[slot] ?? [];
      byRound[slot] = listed;
      if (listed.length < limit) listed.push({ ...entry, round });
      // The page's first round fills it, in reading order: nothing read later can come before.
      if (slot === 0 && listed.length === limit) return { entries: listed, read: total };
    }
    if (batch.length < count) break;
    before = batch.at(-1);
    count = Math.min(maxRead, count * 2);
  }
  const entries: RankedEntry[] = [];
  for (const listed of byRound) {
    if (listed === undefined) continue;
    for (const entry of listed) {
      if (entries.length === limit) return { entries, read: total };
      entries.push(entry);
    }
  }
  return { entries, read: total };
}
