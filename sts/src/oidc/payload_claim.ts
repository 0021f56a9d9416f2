import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";

/** A row of `oidc_payloads` to claim: its key (`type`, `id`) and how long the claim holds. */
export interface PayloadClaim {
  readonly type: string;
  readonly id: string;
  readonly expiresAt: Date;
}

/**
 * Claims the `oidc_payloads` row (`type`, `id`) until `expiresAt`, in one statement: inserts it, or takes
 * over a row whose `expires_at` has passed (not swept yet); a live row is left alone. The primary key
 * serialises concurrent claims, so of any number of them for one key, on any connection or STS instance,
 * exactly one returns true while the claim is live. The claimed row's payload is `{}`; whoever claimed
 * it may overwrite it (and its expiry) afterwards. Expired claims are swept with oidc-provider's rows.
 * @returns true for the one caller that claimed the row.
 */
export async function claimPayloadRow(db: Kysely<Database>, claim: PayloadClaim): Promise<boolean> {
  const row = {
    id: claim.id,
    type: claim.type,
    payload: JSON.stringify({}),
    grant_id: null,
    user_code: null,
    uid: null,
    expires_at: claim.expiresAt,
  };
  const taken = await db
    .insertInto("oidc_payloads")
    .values(row)
    .onConflict((oc) =>
      oc
        .columns(["id", "type"])
        .doUpdateSet({
          payload: row.payload,
          grant_id: null,
          user_code: null,
          uid: null,
          expires_at: row.expires_at,
          consumed_at: null,
        })
        .where(sql<boolean>`oidc_payloads.expires_at is not null and oidc_payloads.expires_at <= now()`),
    )
    .returning("id")
    .executeTakeFirst();
  return taken !== undefined;
}
