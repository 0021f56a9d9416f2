import type { Kysely } from "kysely";
import type { Database } from "../db/schema.js";
import { type AccessTokenSigner, createAccessTokenSigner } from "./access_token_signer.js";
import type { KeyEncryptionKey } from "./kek.js";
import { createOwnTokenVerifier, type OwnTokenVerifier } from "./own_tokens.js";
import { loadSigningKeys, type SigningKeyMaterial } from "./signing_keys.js";

/** A consistent view of the published keys: what signs, what verifies, what `/jwks` shows. */
export interface KeySnapshot {
  readonly keys: readonly SigningKeyMaterial[];
  readonly signer: AccessTokenSigner;
  readonly ownTokens: OwnTokenVerifier;
  /** Identifies the key set (statuses and kids): changes exactly when a rotation happened. */
  readonly version: string;
}

/**
 * Holds the current {@link KeySnapshot} and swaps it when the key set in the database changes (after a
 * rotation on this or another instance). Readers take `ring.current` per request, so a swap never
 * affects a request in flight.
 */
export interface KeyRing {
  readonly current: KeySnapshot;
  /** Reloads the keys; when they changed, swaps the snapshot and calls the listeners. */
  refresh(): Promise<boolean>;
  onChange(listener: (snapshot: KeySnapshot) => void | Promise<void>): void;
}

async function snapshotOf(issuer: string, alg: string, keys: SigningKeyMaterial[]): Promise<KeySnapshot> {
  return {
    keys,
    signer: await createAccessTokenSigner(keys, alg),
    ownTokens: createOwnTokenVerifier(issuer, keys),
    version: keys.map((key) => `${key.status}:${key.kid}`).join(","),
  };
}

/** Loads the keys and builds the ring. */
export async function createKeyRing(options: {
  db: Kysely<Database>;
  kek: KeyEncryptionKey;
  issuer: string;
  alg: string;
}): Promise<KeyRing> {
  let current = await snapshotOf(options.issuer, options.alg, await loadSigningKeys(options.db, options.kek));
  const listeners: ((snapshot: KeySnapshot) => void | Promise<void>)[] = [];
  return {
    get current() {
      return current;
    },
    async refresh() {
      const keys = await loadSigningKeys(options.db, options.kek);
      const version = keys.map((key) => `${key.status}:${key.kid}`).join(",");
      if (version === current.version) return false;
      const next = await snapshotOf(options.issuer, options.alg, keys);
      for (const listener of listeners) await listener(next);
      current = next;
      return true;
    },
    onChange(listener) {
      listeners.push(listener);
    },
  };
}
