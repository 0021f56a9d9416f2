import { randomBytes } from "node:crypto";
import pg from "pg";
import { type DatabaseHandle, openDatabase } from "../../sts/src/db/connect.js";

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

/** Creates an isolated database on `engine`. Postgres databases are named `cs_test_<random>`. */
export async function createTestDatabase(engine: TestEngine): Promise<TestDatabase> {
  if (engine === "pglite") {
    return {
      engine,
      url: undefined,
      open: () => openDatabase({ url: undefined, dataDir: "memory://" }),
      dispose: async () => {},
    };
  }
  const base = process.env.DATABASE_URL;
  if (!base) throw new Error("DATABASE_URL is not set");
  const name = `cs_test_${randomBytes(6).toString("hex")}`;
  await adminQuery(`create database ${name}`);
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    engine,
    url: url.toString(),
    open: () => openDatabase({ url: url.toString(), dataDir: "memory://", poolSize: 10 }),
    dispose: () => adminQuery(`drop database if exists ${name} with (force)`),
  };
}
