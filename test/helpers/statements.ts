import pg from "pg";
import type { DatabaseHandle } from "../../sts/src/db/connect.js";

/** One SQL statement sent to the database, with its parameters. */
export interface Statement {
  readonly text: string;
  readonly values: readonly unknown[];
}

/**
 * Runs `body` and returns every statement the process sent to `handle`'s database meanwhile: on Postgres
 * every `pg.Client#query` (pool queries, prepared statements and Kysely's), on PGlite every `query` of
 * the instance (statements inside a Kysely transaction on PGlite go through the transaction's own
 * object and are not seen). Restores the originals afterwards, whatever happens.
 */
export async function captureStatements(
  handle: DatabaseHandle,
  body: () => Promise<void>,
): Promise<Statement[]> {
  const seen: Statement[] = [];
  const record = (query: unknown, values: unknown) => {
    if (typeof query === "string") seen.push({ text: query, values: Array.isArray(values) ? values : [] });
    else if (query !== null && typeof query === "object" && "text" in query) {
      const config = query as { text: string; values?: unknown[] };
      seen.push({ text: config.text, values: config.values ?? (Array.isArray(values) ? values : []) });
    }
  };
  if (handle.pglite) {
    const pglite = handle.pglite;
    const original = pglite.query;
    pglite.query = function (this: typeof pglite, ...args: Parameters<typeof original>) {
      record(args[0], args[1]);
      return original.apply(this, args);
    } as typeof original;
    try {
      await body();
    } finally {
      pglite.query = original;
    }
    return seen;
  }
  const prototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
  const original = prototype.query;
  prototype.query = function (this: unknown, ...args: unknown[]) {
    record(args[0], args[1]);
    return original.apply(this, args);
  };
  try {
    await body();
  } finally {
    prototype.query = original;
  }
  return seen;
}

/** Statements that read `table` itself (`from table`, `join table`), not a longer name starting with it. */
export function readsOf(statements: readonly Statement[], table: string): Statement[] {
  const pattern = new RegExp(`\\b(from|join)\\s+"?${table}"?(?![\\w])`, "i");
  return statements.filter((statement) => pattern.test(statement.text));
}
