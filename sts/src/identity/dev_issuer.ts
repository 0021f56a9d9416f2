import { generateKeyPairSync } from "node:crypto";
import path from "node:path";
import { importJWK, type JWK, SignJWT } from "jose";
import { readOrCreatePrivateFile } from "../ops/files.js";

/** What a development token may be used as (docs/reference.md#trusted-issuers, `countersign dev-token --usage`). */
export type DevTokenUsage = "subject" | "actor" | "approver";

/**
 * The local development issuer, trusted only when `dev_mode` is true. Its ES256 key lives in
 * `<dataDir>/dev-issuer.jwk` (mode 0600), so the CLI and the server share it without the database.
 */
export interface DevIssuer {
  /** `<issuer>/dev`. */
  readonly issuer: string;
  /** Audience of dev tokens: the STS issuer. */
  readonly audience: string;
  readonly publicJwk: JWK;
  /**
   * Signs a development token. Approver tokens carry `roles: ["approver"]`; every token carries
   * `usage: [<usage>]`, and the STS accepts it only for that usage.
   */
  mint(options: {
    sub: string;
    usage: DevTokenUsage;
    ttlSeconds?: number;
    extraClaims?: Record<string, unknown>;
  }): Promise<string>;
}

/** Loads (or creates on first use) the development issuer's key. */
export async function loadDevIssuer(options: { issuer: string; dataDir: string }): Promise<DevIssuer> {
  const file = path.join(options.dataDir, "dev-issuer.jwk");
  const privateJwk = JSON.parse(
    readOrCreatePrivateFile(file, () => {
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      return JSON.stringify({
        ...privateKey.export({ format: "jwk" }),
        alg: "ES256",
        use: "sig",
        kid: "countersign-dev",
      });
    }),
  ) as JWK;
  const { d: _d, ...publicJwk } = privateJwk;
  const key = await importJWK(privateJwk, "ES256");
  const issuer = `${options.issuer}/dev`;
  return {
    issuer,
    audience: options.issuer,
    publicJwk,
    async mint({ sub, usage, ttlSeconds = 3600, extraClaims = {} }) {
      return new SignJWT({
        ...extraClaims,
        usage: [usage],
        ...(usage === "approver" ? { roles: ["approver"] } : {}),
      })
        .setProtectedHeader({ alg: "ES256", kid: "countersign-dev", typ: "JWT" })
        .setIssuer(issuer)
        .setAudience(options.issuer)
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
        .setJti(crypto.randomUUID())
        .sign(key);
    },
  };
}
