import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";

/** The window of `recent_exchanges_per_minute`, in seconds. */
export const EXCHANGE_RATE_WINDOW_SECONDS = 60;

/**
 * Tokens issued to `clientId` (every approval, every resource) in the 60 seconds before `now`: one
 * count over `issued_tokens` served by the `(client_id, iat)` index. A hint for policies, read without
 * a lock: concurrent exchanges may each see the same count (exact limits are the issuance limiter's
 * job, not the policy's).
 */
export async function countRecentExchanges(
  db: Kysely<Database>,
  clientId: string,
  now: Date,
): Promise<number> {
  const since = new Date(now.getTime() - EXCHANGE_RATE_WINDOW_SECONDS * 1000);
  const row = await db
    .selectFrom("issued_tokens")
    .select((eb) => eb.fn.countAll<string | number | bigint>().as("count"))
    .where("client_id", "=", clientId)
    .where("iat", ">", since)
    .executeTakeFirst();
  return Number(row?.count ?? 0);
}
