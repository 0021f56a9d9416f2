import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { type DatabaseHandle, openDatabase } from "../../sts/src/db/connect.js";
import { migrateToLatest, migrationsFolder } from "../../sts/src/db/migrate.js";

/** The engines a suite runs on: PGlite always, real Postgres when `DATABASE_URL` is set (CI sets it). */
export type TestEngine = "pglite" | "postgres";

export function testEngines(): TestEngine[] {
  return process.env.DATABASE_URL ? ["pglite", "postgres"] : ["pglite"];
}

/** A database of its own for one test file or test: in-memory PGlite, or a fresh Postgres database. */
export interface TestDatabase {
  readonly engine: TestEngine;
  /** Connection string of the fresh Postgres database (undefined for PGlite). */
  readonly url: string | undefined;
  open(): Promise<DatabaseHandle>;
  /** Drops the Postgres database (after every handle is closed). */
  dispose(): Promise<void>;
}

async function adminQuery(text: string): Promise<void> {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

let template: Promise<Blob> | undefined;

/**
 * A migrated PGlite data directory, dumped once and shared by every test process through a file in the
 * temp directory (keyed by the migrations' and PGlite's content), so each in-memory database loads it
 * instead of running initdb and the migrations again.
 */
function pgliteTemplate(): Promise<Blob> {
  template ??= (async () => {
    const root = path.resolve(import.meta.dirname, "../..");
    const hash = createHash("sha256");
    hash.update(readFileSync(path.join(root, "node_modules/@electric-sql/pglite/package.json")));
    for (const file of readdirSync(migrationsFolder).sort())
      hash.update(file).update(readFileSync(path.join(migrationsFolder, file)));
    const file = path.join(tmpdir(), `countersign-pglite-template-${hash.digest("hex").slice(0, 16)}.tar`);
    if (!existsSync(file)) {
      const handle = await openDatabase({ url: undefined, dataDir: "memory://" });
      try {
        await migrateToLatest(handle.db);
        const dump = await handle.pglite!.dumpDataDir("none");
        const draft = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
        writeFileSync(draft, Buffer.from(await dump.arrayBuffer()));
        renameSync(draft, file);
      } finally {
        await handle.close();
      }
    }
    return new Blob([readFileSync(file)]);
  })();
  return template;
}

/** Options of {@link createTestDatabase}. */
export interface TestDatabaseOptions {
  /** Postgres only: create the database with this ICU locale as its collation (e.g. `en-US`), not C. */
  readonly icuLocale?: string;
}

/** Creates an isolated database on `engine`. Postgres databases are named `cs_test_<random>`. */
export async function createTestDatabase(
  engine: TestEngine,
  options: TestDatabaseOptions = {},
): Promise<TestDatabase> {
  if (engine === "pglite") {
    return {
      engine,
      url: undefined,
      open: async () =>
        openDatabase({ url: undefined, dataDir: "memory://", pgliteTemplate: await pgliteTemplate() }),
      dispose: async () => {},
    };
  }
  const base = process.env.DATABASE_URL;
  if (!base) throw new Error("DATABASE_URL is not set");
  const name = `cs_test_${randomBytes(6).toString("hex")}`;
  if (options.icuLocale !== undefined && !/^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/.test(options.icuLocale)) {
    throw new Error(`not an ICU locale: ${options.icuLocale}`);
  }
  await adminQuery(
    options.icuLocale === undefined
      ? `create database ${name}`
      : `create database ${name} template template0 locale_provider icu icu_locale '${options.icuLocale}'`,
  );
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    engine,
    url: url.toString(),
    open: () => openDatabase({ url: url.toString(), dataDir: "memory://", poolSize: 10 }),
    dispose: () => adminQuery(`drop database if exists ${name} with (force)`),
  };
}
