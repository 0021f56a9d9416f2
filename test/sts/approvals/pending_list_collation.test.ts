import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { listPendingApprovals } from "../../../sts/src/approvals/repository.js";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import { createTestDatabase, type TestDatabase } from "../../helpers/database.js";
import { insertApproval } from "../../helpers/exchange.js";

/**
 * Approval ids that sort one way by code unit (every capital before every small letter) and another way
 * in a natural-language collation (a, B, c, D, …): 12 agents' pending approvals, requested in the same
 * millisecond, so only the id orders them.
 */
const IDS = ["a", "B", "c", "D", "e", "F", "g", "H", "i", "J", "k", "L"].map(
  (letter) => `apr_${letter}000000000000000000000`,
);

/**
 * A pending list pages through every approval exactly once whatever the database's collation: the
 * page's position is compared in the application and in SQL, and both must order ids the same way.
 * Production databases are often created with a language's collation (`en_US.UTF-8`, or ICU), not `C`.
 * PGlite has only the `C` collation, so this runs on Postgres (an ICU `en-US` database) alone.
 */
describe("the pending list on a database whose collation is not C (ICU en-US)", {
  skip: process.env.DATABASE_URL ? false : "needs DATABASE_URL (PGlite has only the C collation)",
}, () => {
  let database: TestDatabase;
  let handle: DatabaseHandle;
  before(async () => {
    database = await createTestDatabase("postgres", { icuLocale: "en-US" });
    handle = await database.open();
    await migrateToLatest(handle.db);
    const { rows } = await sql<{ natural: boolean }>`select 'apr_a' < 'apr_B' as natural`.execute(handle.db);
    assert.equal(rows[0]?.natural, true, "the database orders ids in its own collation");
    for (const [n, id] of IDS.entries()) {
      const made = await insertApproval(handle.db, { status: "pending", client_id: `agent-${n}` });
      await sql`update approvals set id = ${id}, created_at = '2026-11-29T06:00:00.000Z'::timestamptz
        where id = ${made}`.execute(handle.db);
    }
  });
  after(async () => {
    await handle?.close();
    await database?.dispose();
  });

  for (const limit of [1, 3, 5]) {
    test(`pages of ${limit}: each of the 12 pending approvals is listed exactly once, in code-unit order of id, newest first`, async () => {
      const listed: string[] = [];
      let afterPosition: Parameters<typeof listPendingApprovals>[1]["after"];
      for (let page = 0; page < IDS.length + 1; page++) {
        const rows = await listPendingApprovals(handle.db, { limit, after: afterPosition });
        listed.push(...rows.map((row) => row.id));
        const last = rows.at(-1);
        if (rows.length < limit || last === undefined) break;
        afterPosition = {
          snapshot: last.snapshot,
          round: last.round,
          createdAt: last.created_at,
          id: last.id,
        };
      }
      // One round (one approval per agent), one instant: ordered by id, descending, as code units compare.
      assert.deepEqual(listed, [...IDS].sort().reverse());
    });
  }
});
