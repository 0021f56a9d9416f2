import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { type CompiledQuery, Kysely, PGliteDialect, PostgresDialect, sql } from "kysely";
import { type ExportedAuditEvent, exportAuditEvents } from "../../../sts/src/audit/export.js";
import { recordRefusal } from "../../../sts/src/audit/refusals.js";
import { type DatabaseHandle, openDatabase } from "../../../sts/src/db/connect.js";
import { migrateToLatest } from "../../../sts/src/db/migrate.js";
import type { Database } from "../../../sts/src/db/schema.js";
import { createTestDatabase, type TestEngine, testEngines } from "../../helpers/database.js";

const root = path.resolve(import.meta.dirname, "../../..");
const cli = path.join(root, "bin/countersign.js");

/** Runs `countersign …` and returns its exit code and output, whatever the code. */
function countersign(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { DATABASE_URL: _db, COUNTERSIGN_CONFIG: _config, ...rest } = process.env;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...args],
      { env: { ...rest, ...env }, timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

/** Audit rows at known times: two before the export's range, five in it (one a counted refusal), one after. */
async function seed(db: Kysely<Database>): Promise<void> {
  const row = (at: string, event: string, reason: string | null = null) =>
    sql`insert into audit_events (at, event, outcome, reason, approval_id, client_id, actor, detail)
      values (${at}::timestamptz, ${event}, ${reason === null ? "granted" : "refused"}, ${reason},
        'apr_AAAAAAAAAAAAAAAAAAAAAA', 'billing-agent', 'billing-agent', '{"jti": "j"}')`.execute(db);
  await row("2026-01-01T00:00:00Z", "approval.requested");
  await row("2026-01-31T23:59:59.999Z", "approval.approved");
  await row("2026-02-01T00:00:00Z", "token_exchange");
  await row("2026-02-10T12:00:00Z", "token_exchange", "approval_used_up");
  await row("2026-02-11T00:00:00Z", "token_exchange");
  await sql`insert into audit_events
      (at, event, outcome, reason, client_id, actor, detail, occurrences, last_at, window_seconds)
    values ('2026-02-12T08:00:00Z', 'token_exchange', 'refused', 'approval_not_found', 'mallory-agent',
      'mallory-agent', '{"error": "invalid_grant", "description": "no such approval for this client \u202e"}', 600,
      '2026-02-12T08:00:09.5Z', 10)`.execute(db);
  await row("2026-02-28T23:59:59Z", "approval.revoked");
  await row("2026-03-01T00:00:00Z", "approval.requested");
}

/** What the export of February prints, in order. */
const FEBRUARY: Omit<ExportedAuditEvent, "id">[] = [
  ["2026-02-01T00:00:00.000Z", "token_exchange", null],
  ["2026-02-10T12:00:00.000Z", "token_exchange", "approval_used_up"],
  ["2026-02-11T00:00:00.000Z", "token_exchange", null],
  ["counted"],
  ["2026-02-28T23:59:59.000Z", "approval.revoked", null],
].map(([at, event, reason]) =>
  at === "counted"
    ? {
        at: "2026-02-12T08:00:00.000Z",
        event: "token_exchange",
        outcome: "refused",
        reason: "approval_not_found",
        approval_id: null,
        client_id: "mallory-agent",
        actor: "mallory-agent",
        detail: { error: "invalid_grant", description: "no such approval for this client \u202e" },
        count: 600,
        last_at: "2026-02-12T08:00:09.500Z",
        window_seconds: 10,
      }
    : {
        at: at as string,
        event: event as string,
        outcome: reason === null ? "granted" : "refused",
        reason: reason ?? null,
        approval_id: "apr_AAAAAAAAAAAAAAAAAAAAAA",
        client_id: "billing-agent",
        actor: "billing-agent",
        detail: { jti: "j" },
        count: 1,
        last_at: null,
        window_seconds: null,
      },
);

async function withSeeded(
  engine: TestEngine,
  body: (handle: DatabaseHandle, url: string | undefined) => Promise<void>,
) {
  const database = await createTestDatabase(engine);
  const handle = await database.open();
  try {
    await migrateToLatest(handle.db);
    await seed(handle.db);
    await body(handle, database.url);
  } finally {
    await handle.close();
    await database.dispose();
  }
}

for (const engine of testEngines()) {
  describe(`audit export on ${engine}`, () => {
    test("exportAuditEvents: the events of [since, until) in id order, a page per query", async () => {
      await withSeeded(engine, async (handle) => {
        const queries: CompiledQuery[] = [];
        const logged = new Kysely<Database>({
          dialect: handle.pool
            ? new PostgresDialect({ pool: handle.pool })
            : new PGliteDialect({ pglite: handle.pglite! }),
          log: (event) => {
            if (event.level === "query") queries.push(event.query);
          },
        });
        const exported: ExportedAuditEvent[] = [];
        for await (const event of exportAuditEvents(logged, {
          since: new Date("2026-02-01T00:00:00Z"),
          until: new Date("2026-03-01T00:00:00Z"),
          pageSize: 2,
        })) {
          exported.push(event);
        }
        assert.deepEqual(
          exported.map(({ id: _id, ...event }) => event),
          FEBRUARY,
        );
        const ids = exported.map((event) => BigInt(event.id));
        assert.deepEqual(
          ids,
          [...ids].sort((a, b) => (a < b ? -1 : 1)),
        );
        // Five rows, two a page: three queries, each asking for at most two rows.
        assert.equal(queries.length, 3);
        for (const query of queries) assert.match(query.sql, /order by "id" limit \$\d+$/);
        assert.deepEqual(
          queries.map((query) => query.parameters.at(-1)),
          [2, 2, 2],
        );
      });
    });

    test("countersign audit export --since … --until … prints one JSON line per event, terminal-safe; a bad time is refused", async () => {
      const dataDir = mkdtempSync(path.join(tmpdir(), "countersign-export-"));
      try {
        // PGlite: a data directory the CLI opens after this process let go of it.
        let url: string | undefined;
        const database = engine === "pglite" ? undefined : await createTestDatabase(engine);
        const handle = database
          ? await database.open()
          : await openDatabase({ url: undefined, dataDir, poolSize: 1 });
        try {
          await migrateToLatest(handle.db);
          await seed(handle.db);
          url = database?.url;
        } finally {
          await handle.close();
        }
        try {
          const env = { COUNTERSIGN_DATA_DIR: dataDir, ...(url ? { DATABASE_URL: url } : {}) };
          const run = await countersign(
            ["audit", "export", "--since", "2026-02-01T00:00:00Z", "--until", "2026-03-01"],
            env,
          );
          assert.equal(run.code, 0, run.stderr);
          const lines = run.stdout.split("\n");
          assert.equal(lines.pop(), "");
          assert.deepEqual(
            lines.map((line) => {
              const { id: _id, ...event } = JSON.parse(line) as ExportedAuditEvent;
              return event;
            }),
            FEBRUARY,
          );
          // The bidi override an agent's text carried is escaped, not printed raw.
          assert.ok(!run.stdout.includes("\u202e"));
          assert.ok(run.stdout.includes("\\u202e"));

          const bad = await countersign(["audit", "export", "--since", "last tuesday"], env);
          assert.equal(bad.code, 1);
          assert.match(
            bad.stderr,
            /--since <time>' argument 'last tuesday' is invalid\. must be an ISO 8601/,
          );
          const missing = await countersign(["audit", "export"], env);
          assert.equal(missing.code, 1);
          assert.match(missing.stderr, /required option '--since <time>' not specified/);
        } finally {
          await database?.dispose();
        }
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    });
  });
}

test("recordRefusal and the export agree: a counted row exports its count", async () => {
  const database = await createTestDatabase("pglite");
  const handle = await database.open();
  try {
    await migrateToLatest(handle.db);
    const since = new Date(Date.now() - 60_000);
    for (let i = 0; i < 3; i++) {
      await recordRefusal(
        handle.db,
        {
          event: "token_exchange",
          reason: "approval_pending",
          clientId: "billing-agent",
          claimedApprovalId: null,
          detail: { error: "authorization_pending" },
        },
        1_000_000_000,
      );
    }
    const exported: ExportedAuditEvent[] = [];
    // The counted row's `at` is its window's start (2001-09-09 with this window): export from then.
    for await (const event of exportAuditEvents(handle.db, { since: new Date(0) })) exported.push(event);
    assert.equal(exported.length, 1);
    assert.equal(exported[0]?.count, 3);
    assert.equal(exported[0]?.window_seconds, 1_000_000_000);
    assert.ok(new Date(exported[0]?.last_at ?? 0).getTime() >= since.getTime());
  } finally {
    await handle.close();
  }
});
