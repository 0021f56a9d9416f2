import { type Kysely, sql } from "kysely";
import type { Adapter, AdapterPayload } from "oidc-provider";
import type { Database } from "../db/schema.js";
import { isStorableText } from "../db/text.js";
import { type BatchLimits, deleteInBatches } from "../ops/batched_delete.js";
import { claimPayloadRow } from "./payload_claim.js";

/** oidc-provider's model of seen `jti`s (DPoP proofs, client assertions): see {@link PostgresAdapter.find}. */
const REPLAY_DETECTION = "ReplayDetection";

/**
 * How long a `jti` claimed by {@link PostgresAdapter.find} stays claimed before the `upsert` that
 * follows it sets its exact expiry. It only has to outlast the moment between the two; should the
 * `upsert` never come (the request failed), the `jti` stays spent that long and is then swept.
 */
const PROVISIONAL_CLAIM_SECONDS = 600;

/**
 * oidc-provider's storage contract, kept in Postgres (`oidc_payloads`). One row per (model, id); expired
 * rows read as absent and are swept by {@link sweepExpiredPayloads}. Used for everything oidc-provider
 * persists (e.g. DPoP and client-assertion `jti` replay detection), so nothing lives only in memory.
 *
 * `ReplayDetection` is the exception to plain storage: oidc-provider's `ReplayDetection.unique` looks a
 * `jti` up (`find`) and, when it is absent, saves it (`upsert`): two requests with one DPoP proof or one
 * client assertion could both look before either saves. So for that model `find` claims the `jti`
 * atomically instead (see {@link PostgresAdapter.find}).
 */
export class PostgresAdapter implements Adapter {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly model: string,
  ) {}

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    const expiresAt = typeof expiresIn === "number" ? new Date(Date.now() + expiresIn * 1000) : null;
    const row = {
      id,
      type: this.model,
      payload: JSON.stringify(payload),
      grant_id: payload.grantId ?? null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      expires_at: expiresAt,
    };
    await this.db
      .insertInto("oidc_payloads")
      .values(row)
      .onConflict((oc) =>
        oc.columns(["id", "type"]).doUpdateSet({
          payload: row.payload,
          grant_id: row.grant_id,
          user_code: row.user_code,
          uid: row.uid,
          expires_at: row.expires_at,
          consumed_at: null,
        }),
      )
      .execute();
  }

  private async findBy(
    column: "id" | "user_code" | "uid",
    value: string,
  ): Promise<AdapterPayload | undefined> {
    // A key Postgres cannot store (e.g. a client_id with NUL from a request) names no row.
    if (!isStorableText(value)) return undefined;
    const row = await this.db
      .selectFrom("oidc_payloads")
      .select(["payload", "consumed_at", "expires_at"])
      .where("type", "=", this.model)
      .where(column, "=", value)
      .executeTakeFirst();
    if (!row || (row.expires_at && row.expires_at.getTime() <= Date.now())) return undefined;
    const payload = row.payload as AdapterPayload;
    return row.consumed_at ? { ...payload, consumed: Math.floor(row.consumed_at.getTime() / 1000) } : payload;
  }

  /**
   * The payload stored under `id`, or undefined. For `ReplayDetection`, a claim rather than a read: the
   * `jti` row is inserted (or an expired one taken over) in one statement with a provisional expiry, so of
   * any number of concurrent calls for one `jti`, on any STS instance, exactly one gets undefined ("not
   * seen": oidc-provider then saves it with its exact expiry); every other call, and every call while the
   * row is live, gets a payload ("seen": a replay).
   */
  find(id: string): Promise<AdapterPayload | undefined> {
    if (this.model === REPLAY_DETECTION) return this.claimJti(id);
    return this.findBy("id", id);
  }

  private async claimJti(id: string): Promise<AdapterPayload | undefined> {
    // A marker oidc-provider's BaseModel.find accepts whatever the row holds (no `exp` to have passed):
    // were it rejected, the replay would read as unseen.
    const seen: AdapterPayload = { jti: id, kind: REPLAY_DETECTION };
    // Fail closed on an id Postgres cannot store (oidc-provider passes a SHA-256 digest: never the case).
    if (!isStorableText(id)) return seen;
    const claimed = await claimPayloadRow(this.db, {
      type: this.model,
      id,
      expiresAt: new Date(Date.now() + PROVISIONAL_CLAIM_SECONDS * 1000),
    });
    return claimed ? undefined : seen;
  }

  findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
    return this.findBy("user_code", userCode);
  }

  findByUid(uid: string): Promise<AdapterPayload | undefined> {
    return this.findBy("uid", uid);
  }

  async consume(id: string): Promise<void> {
    await this.db
      .updateTable("oidc_payloads")
      .set({ consumed_at: new Date() })
      .where("type", "=", this.model)
      .where("id", "=", id)
      .execute();
  }

  async destroy(id: string): Promise<void> {
    await this.db.deleteFrom("oidc_payloads").where("type", "=", this.model).where("id", "=", id).execute();
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await this.db.deleteFrom("oidc_payloads").where("grant_id", "=", grantId).execute();
  }
}

/**
 * Deletes expired oidc-provider rows (`expires_at` before `now`; they already read as absent), in
 * bounded batches ({@link deleteInBatches}). The retention job calls it every run.
 * @returns how many were removed.
 */
export async function sweepExpiredPayloads(
  db: Kysely<Database>,
  now: Date,
  limits: BatchLimits,
): Promise<number> {
  return deleteInBatches(db, "oidc_payloads", sql`expires_at < ${now.toISOString()}::timestamptz`, limits);
}
