import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";
import type { KeyEncryptionKey } from "./kek.js";
import { generateSealedKey, KEYS_LOCK_KEY } from "./signing_keys.js";

/** The outcome of a rotation: which key signs now, which is announced next, which were retired. */
export interface RotationResult {
  readonly current: string;
  readonly next: string;
  readonly previous: string | undefined;
  readonly retired: readonly string[];
}

/**
 * Rotates the signing keys for `alg`, atomically and once across instances (advisory lock):
 * `next` → `current` (it has been published in `/jwks` since it was created, so verifiers already know
 * it), `current` → `previous` (still published, so tokens it signed keep verifying), a fresh `next` is
 * created, and `previous` keys that stopped signing more than `retireAfterSeconds` ago are retired.
 * @param retireAfterSeconds - how long a previous key stays published; at least the longest token
 *   lifetime plus clock skew.
 * @param onlyIfOlderThanSeconds - for scheduled rotation: do nothing unless the current key has signed
 *   for at least this long (re-checked under the lock, so concurrent schedulers rotate once).
 */
export async function rotateSigningKeys(
  db: Kysely<Database>,
  kek: KeyEncryptionKey,
  alg: string,
  options: { retireAfterSeconds: number; onlyIfOlderThanSeconds?: number },
): Promise<RotationResult | undefined> {
  return db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${KEYS_LOCK_KEY})`.execute(trx);
    const rows = await trx
      .selectFrom("signing_keys")
      .select(["kid", "status", "activated_at", "created_at"])
      .where("alg", "=", alg)
      .where("status", "in", ["next", "current"])
      .execute();
    const current = rows.find((row) => row.status === "current");
    if (options.onlyIfOlderThanSeconds !== undefined && current?.activated_at) {
      const age = (Date.now() - current.activated_at.getTime()) / 1000;
      if (age < options.onlyIfOlderThanSeconds) return undefined;
    }
    let next = rows.find((row) => row.status === "next")?.kid;
    if (!next) {
      const created = await generateSealedKey(kek, alg);
      await trx
        .insertInto("signing_keys")
        .values({ ...created, status: "next" })
        .execute();
      next = created.kid;
    }
    const now = new Date();
    if (current) {
      await trx
        .updateTable("signing_keys")
        .set({ status: "previous", deactivated_at: now })
        .where("kid", "=", current.kid)
        .execute();
    }
    await trx
      .updateTable("signing_keys")
      .set({ status: "current", activated_at: now })
      .where("kid", "=", next)
      .execute();
    const announced = await generateSealedKey(kek, alg);
    await trx
      .insertInto("signing_keys")
      .values({ ...announced, status: "next" })
      .execute();
    const retired = await retirePreviousKeys(trx, alg, options.retireAfterSeconds);
    return { current: next, next: announced.kid, previous: current?.kid, retired };
  });
}

/** Retires `previous` keys that stopped signing more than `retireAfterSeconds` ago. Returns their kids. */
export async function retirePreviousKeys(
  db: Kysely<Database>,
  alg: string,
  retireAfterSeconds: number,
): Promise<string[]> {
  const cutoff = new Date(Date.now() - retireAfterSeconds * 1000);
  const rows = await db
    .updateTable("signing_keys")
    .set({ status: "retired", retired_at: new Date() })
    .where("alg", "=", alg)
    .where("status", "=", "previous")
    .where("deactivated_at", "<", cutoff)
    .returning("kid")
    .execute();
  return rows.map((row) => row.kid);
}
