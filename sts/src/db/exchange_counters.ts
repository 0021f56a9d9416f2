import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/** The window of `recent_exchanges_per_minute`, in seconds. */
export const EXCHANGE_RATE_WINDOW_SECONDS = 60;

/**
 * The first `iat` second of the window ending at `now`: tokens carry `iat` in whole seconds, and a token
 * is in the window when `iat` is after `now - 60 s`, i.e. `iat ≥ floor(now - 60 s) + 1`.
 */
export function exchangeRateWindowStart(now: Date): number {
  return Math.floor((now.getTime() - EXCHANGE_RATE_WINDOW_SECONDS * 1000) / 1000) + 1;
}

/**
 * The query behind {@link countRecentExchanges}: a sum over at most 60 of the agent's rows of
 * `exchange_counters` (tokens issued per agent and `iat` second), served by its primary key.
 */
export function recentExchangesQuery(db: Kysely<Database>, clientId: string, now: Date) {
  return db
    .selectFrom("exchange_counters")
    .select((eb) => eb.fn.coalesce(eb.fn.sum<string | number>("exchanges"), eb.lit(0)).as("count"))
    .where("client_id", "=", clientId)
    .where("iat_second", ">=", exchangeRateWindowStart(now));
}

/**
 * Tokens issued to `clientId` (every approval, every resource) whose `iat` is within the 60 seconds
 * before `now`: exactly the tokens with `iat > now - 60 s` (iat in whole seconds), read from the
 * per-second counters `countersign_issue` keeps in the same transaction as the tokens, never by
 * counting `issued_tokens`. A hint for policies, read without a lock: concurrent exchanges may each
 * see the same count (exact limits are the issuance limiter's job, not the policy's).
 */
export async function countRecentExchanges(
  db: Kysely<Database>,
  clientId: string,
  now: Date,
): Promise<number> {
  const row = await recentExchangesQuery(db, clientId, now).executeTakeFirst();
  return Number(row?.count ?? 0);
}
