import { type Kysely, type RawBuilder, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** How much one pruning pass may delete. */
export interface BatchLimits {
  /** Rows one statement deletes. */
  readonly batchSize: number;
  /** Most statements per pass. */
  readonly maxBatches: number;
}

/**
 * Deletes the rows of `table` matching `condition`, at most `maxBatches` statements of `batchSize`
 * rows (`DELETE … WHERE ctid = ANY(ARRAY(SELECT ctid … LIMIT n FOR UPDATE SKIP LOCKED))`): each
 * statement short, rows another instance is deleting skipped, a row changed meanwhile (a new version,
 * a new ctid) left alone. Stops at the first batch that is not full. Give `condition` an index.
 * @returns the rows deleted.
 */
export async function deleteInBatches(
  db: Kysely<Database>,
  table: string,
  condition: RawBuilder<unknown>,
  limits: BatchLimits,
): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < limits.maxBatches; batch++) {
    const result = await sql`
      delete from ${sql.table(table)} where ctid = any(array(
        select ctid from ${sql.table(table)} where ${condition}
        limit ${limits.batchSize} for update skip locked))`.execute(db);
    const deleted = Number(result.numAffectedRows ?? 0n);
    total += deleted;
    if (deleted < limits.batchSize) break;
  }
  return total;
}
