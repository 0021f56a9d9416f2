import type Provider from "oidc-provider";
import type { TokenEndpointGrantContext } from "oidc-provider";
// oidc-provider's own client_credentials grant and the helpers it is registered with. They are not
// part of its public exports, so they are imported here, behind one typed boundary: the STS replaces
// the grant with a wrapper (provider.ts) that hands every request it does not serve itself to this one.
// @ts-expect-error: internal module without type declarations
import { handler as clientCredentialsHandler } from "oidc-provider/lib/actions/grants/client_credentials.js";
import * as grantHelpers from "oidc-provider/lib/helpers/grants.js";

type GrantHelper = (provider: Provider, ...args: unknown[]) => unknown;
type BuiltInHandler = (
  provider: Provider,
  helpers: Record<string, (...args: unknown[]) => unknown>,
  ctx: TokenEndpointGrantContext,
) => Promise<void>;

/**
 * oidc-provider's built-in `client_credentials` handler for `provider`, bound the way oidc-provider
 * binds it when it registers the grant itself.
 */
export function builtInClientCredentials(
  provider: Provider,
): (ctx: TokenEndpointGrantContext) => Promise<void> {
  const helpers = Object.fromEntries(
    Object.entries(grantHelpers as Record<string, GrantHelper>).map(([name, helper]) => [
      name,
      helper.bind(undefined, provider),
    ]),
  );
  return (ctx) => (clientCredentialsHandler as BuiltInHandler)(provider, helpers, ctx);
}
