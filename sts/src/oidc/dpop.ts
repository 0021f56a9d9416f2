import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";
// oidc-provider's own DPoP (RFC 9449) proof validation and replay detection. They are not part of its
// public exports (custom grants get no helpers), so they are imported here, behind one typed boundary.
// @ts-expect-error: internal module without type declarations
import validateDpop, { checkDpopReplay } from "oidc-provider/lib/helpers/validate_dpop.js";

/** A validated DPoP proof: the JWK thumbprint (RFC 7638) the token gets bound to (`cnf.jkt`). */
export interface DpopProof {
  readonly thumbprint: string;
  readonly jti: string;
  readonly iat: number;
}

type ValidateDpop = (
  provider: Provider,
  ctx: KoaContextWithOIDC,
  accessToken?: string,
) => Promise<DpopProof | undefined>;
type CheckDpopReplay = (
  provider: Provider,
  ctx: KoaContextWithOIDC,
  proof: DpopProof,
  clientId: string,
) => Promise<void>;

/**
 * Validates the request's `DPoP` header, if any: `typ` dpop+jwt, allowed algorithm, signature by the
 * embedded key, `htm`, `htu`, `iat` window. Throws oidc-provider's `invalid_dpop_proof`.
 * @returns the proof, or undefined when no `DPoP` header was sent.
 */
export function validateDpopProof(
  provider: Provider,
  ctx: KoaContextWithOIDC,
): Promise<DpopProof | undefined> {
  return (validateDpop as ValidateDpop)(provider, ctx);
}

/** Refuses a proof whose `jti` was seen before (stored through the Postgres adapter). */
export function assertDpopNotReplayed(
  provider: Provider,
  ctx: KoaContextWithOIDC,
  proof: DpopProof,
  clientId: string,
): Promise<void> {
  return (checkDpopReplay as CheckDpopReplay)(provider, ctx, proof, clientId);
}
