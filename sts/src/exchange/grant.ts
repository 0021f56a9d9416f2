import { TOKEN_EXCHANGE_GRANT } from "../oidc/clients.js";
import type { GrantRegistration } from "../oidc/provider.js";
import type { StsServices } from "../services.js";

/** The RFC 8693 token exchange grant (CONTRACT §4). */
export function tokenExchangeGrant(_services: StsServices): GrantRegistration {
  return {
    grantType: TOKEN_EXCHANGE_GRANT,
    parameters: [],
    handler: async () => {},
  };
}
