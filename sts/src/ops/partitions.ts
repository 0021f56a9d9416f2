import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/**
 * The tables partitioned by UTC day (migration `2026_11_28_0009_retention`), with their partition key:
 * audit events by when they happened, issued-token records by when the token expires.
 */
export const PARTITIONED_TABLES = [
  { table: "audit_events", key: "at" },
  { table: "issued_tokens", key: "exp" },
] as const;

/** A partitioned table's name. */
export type PartitionedTable = (typeof PARTITIONED_TABLES)[number]["table"];

/**
 * Longest a partition DDL statement waits for its lock, in milliseconds. Creating or dropping a
 * partition locks its table, and writers queue behind a waiting lock: past this, the statement gives up
 * (and the next run retries) rather than hold up token issuance.
 */
export const PARTITION_LOCK_TIMEOUT_MS = 1000;

/** `date` as the UTC day `YYYY-MM-DD`. */
export function utcDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/**
 * Creates the missing daily partitions of `table` for `days` days from the UTC day of `from` (rows of
 * those days already in the default partition are moved into theirs), through
 * `countersign_ensure_partitions`.
 * @returns how many were created, or -1 when another session was maintaining partitions (nothing done).
 * @throws when the DDL cannot get its lock within {@link PARTITION_LOCK_TIMEOUT_MS}.
 */
export async function ensurePartitions(
  db: Kysely<Database>,
  table: PartitionedTable,
  from: Date,
  days: number,
): Promise<number> {
  const key = PARTITIONED_TABLES.find((entry) => entry.table === table)?.key;
  const { rows } = await sql<{ created: number }>`
    select countersign_ensure_partitions(${table}, ${key}, ${utcDay(from)}::date, ${days}::integer,
      ${PARTITION_LOCK_TIMEOUT_MS}::integer) as created`.execute(db);
  return Number(rows[0]?.created ?? 0);
}

/**
 * Drops every daily partition of `table` that ends at or before `before` (and the partition of rows
 * from before partitioning, once its end is), through `countersign_drop_partitions`. The default
 * partition is never dropped.
 * @returns how many were dropped, or -1 when another session was maintaining partitions.
 * @throws when the DDL cannot get its lock within {@link PARTITION_LOCK_TIMEOUT_MS}.
 */
export async function dropPartitions(
  db: Kysely<Database>,
  table: PartitionedTable,
  before: Date,
): Promise<number> {
  const { rows } = await sql<{ dropped: number }>`
    select countersign_drop_partitions(${table}, ${before.toISOString()}::timestamptz,
      ${PARTITION_LOCK_TIMEOUT_MS}::integer) as dropped`.execute(db);
  return Number(rows[0]?.dropped ?? 0);
}

/** The partitions of `table` by name, in name order (so daily ones in day order). */
export async function listPartitions(db: Kysely<Database>, table: PartitionedTable): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = ${table}::regclass order by c.relname`.execute(db);
  return rows.map((row) => row.name);
}
