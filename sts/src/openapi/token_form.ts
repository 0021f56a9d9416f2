import { z } from "zod";
import { TOKEN_TYPE } from "../exchange/parameters.js";

/** RFC 8693 §2.1 grant type. */
export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";

/** RFC 7523 §2.1 grant type (here: ID-JAG redemption). */
const JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const tokenType = z.enum([TOKEN_TYPE.jwt, TOKEN_TYPE.accessToken, TOKEN_TYPE.idToken]);

/**
 * The `POST /token` form body as the OpenAPI document describes it (docs/reference.md#token-exchange): the token exchange
 * (RFC 8693 §2.1), the `client_credentials` grant agents use for the approval API and MCP resources, and
 * the `jwt-bearer` grant (RFC 7523) redeeming ID-JAGs. oidc-provider
 * parses and validates the real request; this schema documents it.
 */
export const tokenRequestForm = z
  .object({
    grant_type: z
      .enum([TOKEN_EXCHANGE_GRANT, "client_credentials", JWT_BEARER_GRANT])
      .describe(
        "`…:token-exchange` (RFC 8693); `client_credentials` for an approval API credential or an MCP resource that opts in; `…:jwt-bearer` (RFC 7523) to redeem an ID-JAG, when an issuer is trusted for `id_jag`.",
      ),
    assertion: z
      .string()
      .optional()
      .describe(
        "jwt-bearer, required: an ID-JAG (`typ` `oauth-id-jag+jwt`) from a trusted issuer (usage `id_jag`), at most 16 KiB.",
      ),
    subject_token: z
      .string()
      .optional()
      .describe(
        "Token exchange, required: a JWT from a trusted issuer (usage `subject`) or a token this STS issued.",
      ),
    subject_token_type: tokenType.optional().describe("Token exchange, required: the subject token's type."),
    actor_token: z
      .string()
      .optional()
      .describe("Optional: a JWT from a trusted issuer (usage `actor`); becomes the `act` claim."),
    actor_token_type: tokenType.optional().describe("Required with `actor_token`."),
    resource: z
      .string()
      .optional()
      .describe(
        "The one target resource (RFC 8707); or `audience`. For client_credentials: `<issuer>/approvals` or an MCP resource. For jwt-bearer: one the ID-JAG names (or the ID-JAG's one `resource`).",
      ),
    audience: z.string().optional().describe("The one target, instead of `resource`."),
    scope: z
      .string()
      .optional()
      .describe(
        "Space-separated; within the approval's scope (token exchange), `approvals:request`, or for jwt-bearer within the ID-JAG's `scope` (default: the ID-JAG's scope, else the resource's `default_scopes`).",
      ),
    authorization_details: z
      .string()
      .optional()
      .describe('Token exchange, required: JSON `[{"type": "agent_task", "approval_id": "apr_…"}]`.'),
    client_id: z.string().optional().describe("client_secret_post and private_key_jwt."),
    client_secret: z.string().optional().describe("client_secret_post."),
    client_assertion_type: z
      .literal("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
      .optional()
      .describe("private_key_jwt (RFC 7523)."),
    client_assertion: z.string().optional().describe("private_key_jwt: a JWT signed with the client's key."),
  })
  .describe("An OAuth token request (application/x-www-form-urlencoded).");

/** A successful `POST /token` answer (RFC 8693 §2.2.1, RFC 6749 §5.1). */
export const tokenResponse = z.object({
  access_token: z.string().describe("An RFC 9068 JWT (`typ: at+jwt`)."),
  issued_token_type: z.literal(TOKEN_TYPE.accessToken).optional(),
  token_type: z.enum(["Bearer", "DPoP"]),
  expires_in: z.number().int(),
  scope: z.string().optional(),
});
