import type { ClientMetadata } from "oidc-provider";
import type { ClientConfig } from "../config/schema.js";

/** The RFC 8693 grant type identifier. */
export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";

/** The RFC 7523 §2.1 grant type: a JWT (here an ID-JAG) as an authorization grant. */
export const JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/** Maps the config file's agents to oidc-provider client metadata: machine clients, no redirects. */
export function toClientMetadata(client: ClientConfig, grantTypes: readonly string[]): ClientMetadata {
  const metadata: ClientMetadata = {
    client_id: client.client_id,
    token_endpoint_auth_method: client.token_endpoint_auth_method,
    grant_types: [...grantTypes],
    response_types: [],
    redirect_uris: [],
  };
  if (client.client_secret !== undefined) metadata.client_secret = client.client_secret;
  if (client.jwks !== undefined) metadata.jwks = client.jwks as ClientMetadata["jwks"];
  if (client.client_name !== undefined) metadata.client_name = client.client_name;
  return metadata;
}
