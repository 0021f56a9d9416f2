import { createHash } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/**
 * The `oidc_payloads` type of a spent assertion: one row per (iss, jti), whose `expires_at` is the
 * assertion's `exp`. Expired rows are swept with oidc-provider's (ops/retention.ts), so the store holds
 * at most the assertions redeemed within one assertion lifetime (`max_token_age_seconds`, ≤ 3600 s).
 */
export const SPENT_ASSERTION_TYPE = "SpentIdJag";

/** Where the `jti`s of redeemed assertions are kept (RFC 7523 §3 item 7), shared by every STS instance. */
export interface AssertionReplayStore {
  /**
   * Marks (iss, jti) spent until `exp` (epoch seconds). Atomic: of any number of concurrent calls for
   * one (iss, jti), on any instance, exactly one returns true while the mark is live.
   * @returns false when it was already spent.
   */
  spend(iss: string, jti: string, exp: number): Promise<boolean>;
  /** Unmarks (iss, jti): the token it was spent for was not issued after all. */
  release(iss: string, jti: string): Promise<void>;
}

/** The row id of (iss, jti): a digest, so neither is stored and any length fits. */
function rowId(iss: string, jti: string): string {
  return createHash("sha256")
    .update(JSON.stringify([iss, jti]))
    .digest("base64url");
}

/** Builds the store over `oidc_payloads`. */
export function createAssertionReplayStore(db: Kysely<Database>): AssertionReplayStore {
  return {
    async spend(iss, jti, exp) {
      const expiresAt = new Date(exp * 1000);
      const row = {
        id: rowId(iss, jti),
        type: SPENT_ASSERTION_TYPE,
        payload: JSON.stringify({}),
        expires_at: expiresAt,
      };
      // An expired mark that was not swept yet is taken over; a live one is left alone (no row returned).
      const taken = await db
        .insertInto("oidc_payloads")
        .values(row)
        .onConflict((oc) =>
          oc
            .columns(["id", "type"])
            .doUpdateSet({ expires_at: expiresAt, consumed_at: null })
            .where(sql<boolean>`oidc_payloads.expires_at is not null and oidc_payloads.expires_at <= now()`),
        )
        .returning("id")
        .executeTakeFirst();
      return taken !== undefined;
    },
    async release(iss, jti) {
      await db
        .deleteFrom("oidc_payloads")
        .where("type", "=", SPENT_ASSERTION_TYPE)
        .where("id", "=", rowId(iss, jti))
        .execute();
    },
  };
}
