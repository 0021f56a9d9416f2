import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { claimPayloadRow } from "../oidc/payload_claim.js";

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
    spend(iss, jti, exp) {
      // An expired mark that was not swept yet is taken over; a live one is left alone.
      return claimPayloadRow(db, {
        type: SPENT_ASSERTION_TYPE,
        id: rowId(iss, jti),
        expiresAt: new Date(exp * 1000),
      });
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
