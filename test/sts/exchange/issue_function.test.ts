import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import type { DatabaseHandle } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import { ISSUE_PARAMETERS, ISSUE_SQL } from "../../../sts/src/exchange/issue_function.js";
import { createTestDatabase, type TestDatabase, testEngines } from "../../helpers/database.js";

for (const engine of testEngines()) {
  describe(`countersign_issue's seam on ${engine}`, () => {
    let database: TestDatabase;
    let handle: DatabaseHandle;
    before(async () => {
      database = await createTestDatabase(engine);
      handle = await database.open();
      await migrateToLatest(handle.db);
    });
    after(async () => {
      await handle.close();
      await database.dispose();
    });

    test("the parameter list defined in TypeScript is the function's signature in the database", async () => {
      const { rows } = await sql<{ args: string; result: string }>`
        select pg_get_function_arguments(p.oid) as args, pg_get_function_result(p.oid) as result
        from pg_proc p where p.proname = 'countersign_issue'`.execute(handle.db);
      assert.equal(rows.length, 1, "exactly one countersign_issue");
      assert.equal(
        rows[0]?.args,
        ISSUE_PARAMETERS.map((parameter) => `${parameter.name} ${parameter.type}`).join(", "),
      );
      assert.equal(rows[0]?.result, "TABLE(n integer, outcome text, tokens_issued integer, expire bigint)");
    });

    test("the call names every parameter once, in order, casting the jsonb arrays", () => {
      const placeholders = [...ISSUE_SQL.matchAll(/\$(\d+)/g)].map((match) => Number(match[1]));
      assert.deepEqual(
        placeholders,
        ISSUE_PARAMETERS.map((_, i) => i + 1),
      );
      assert.equal((ISSUE_SQL.match(/as jsonb\[\]/g) ?? []).length, 2);
    });
  });
}
