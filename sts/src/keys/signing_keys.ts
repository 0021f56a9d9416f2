import { randomUUID } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from "jose";
import { type Kysely, sql } from "kysely";
import type { Database, SigningKeyStatus } from "../db/schema.js";
import type { KeyEncryptionKey } from "./kek.js";

/** A signing key as the STS uses it: decrypted private JWK plus its public half. */
export interface SigningKeyMaterial {
  readonly kid: string;
  readonly alg: string;
  readonly status: SigningKeyStatus;
  /** Private JWK with `kid`, `alg` and `use: "sig"`. Never logged, never served. */
  readonly privateJwk: JWK;
  /** Public JWK with `kid`, `alg` and `use: "sig"`, as served at `/jwks`. */
  readonly publicJwk: JWK;
}

/** Lock key serialising key creation and rotation across instances ("keys"). */
export const KEYS_LOCK_KEY = 0x6b657973;

const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k"] as const;

function publicPart(jwk: JWK): JWK {
  const copy: Record<string, unknown> = { ...jwk };
  for (const member of PRIVATE_MEMBERS) delete copy[member];
  return copy as JWK;
}

/** Generates a new key pair for `alg` and returns it sealed for storage. */
export async function generateSealedKey(kek: KeyEncryptionKey, alg: string) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = `${(await calculateJwkThumbprint(jwk)).slice(0, 16)}-${randomUUID().slice(0, 8)}`;
  const privateJwk: JWK = { ...jwk, kid, alg, use: "sig" };
  return {
    kid,
    alg,
    public_jwk: JSON.stringify(publicPart(privateJwk)),
    private_jwk_enc: kek.seal(JSON.stringify(privateJwk), `signing_key:${kid}`),
  };
}

/**
 * Makes sure a `current` signing key and an announced `next` key exist for `alg`, creating them on first
 * start. Serialised across instances by a transaction-scoped advisory lock, so two instances starting
 * together share one key set.
 */
export async function ensureSigningKey(
  db: Kysely<Database>,
  kek: KeyEncryptionKey,
  alg: string,
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(${KEYS_LOCK_KEY})`.execute(trx);
    const present = await trx
      .selectFrom("signing_keys")
      .select("status")
      .where("alg", "=", alg)
      .where("status", "in", ["current", "next"])
      .execute();
    if (!present.some((row) => row.status === "current")) {
      const key = await generateSealedKey(kek, alg);
      await trx
        .insertInto("signing_keys")
        .values({ ...key, status: "current", activated_at: new Date() })
        .execute();
    }
    if (!present.some((row) => row.status === "next")) {
      const key = await generateSealedKey(kek, alg);
      await trx
        .insertInto("signing_keys")
        .values({ ...key, status: "next" })
        .execute();
    }
  });
}

/**
 * Loads every published key (next, current, previous), decrypting the private parts. The current key
 * comes first. Throws when a sealed key cannot be opened (wrong `COUNTERSIGN_KEK`): fail closed.
 */
export async function loadSigningKeys(
  db: Kysely<Database>,
  kek: KeyEncryptionKey,
): Promise<SigningKeyMaterial[]> {
  const rows = await db
    .selectFrom("signing_keys")
    .select(["kid", "alg", "status", "public_jwk", "private_jwk_enc"])
    .where("status", "in", ["next", "current", "previous"])
    .orderBy(sql`case status when 'current' then 0 when 'next' then 1 else 2 end`)
    .orderBy("created_at", "desc")
    .execute();
  return rows.map((row) => {
    let privateJwk: JWK;
    try {
      privateJwk = JSON.parse(kek.open(row.private_jwk_enc, `signing_key:${row.kid}`)) as JWK;
    } catch (cause) {
      throw new Error(
        `signing key ${row.kid} cannot be decrypted: is COUNTERSIGN_KEK the one it was sealed with?`,
        {
          cause,
        },
      );
    }
    return { kid: row.kid, alg: row.alg, status: row.status, privateJwk, publicJwk: row.public_jwk as JWK };
  });
}
