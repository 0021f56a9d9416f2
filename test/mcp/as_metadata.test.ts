import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { discoverAuthorizationServerMetadata } from "@modelcontextprotocol/sdk/client/auth.js";
import {
  OAuthMetadataSchema,
  OpenIdProviderDiscoveryMetadataSchema,
} from "@modelcontextprotocol/sdk/shared/auth.js";
import { startTestApp, type TestApp } from "../helpers/app.js";

/** RFC 8414 metadata as an MCP client reads it: the official SDK's own schemas and discovery. */
describe("authorization server metadata for MCP clients", () => {
  let sts: TestApp;
  let oauth: Record<string, unknown>;
  let openid: Record<string, unknown>;

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    oauth = (await (await fetch(`${sts.url}/.well-known/oauth-authorization-server`)).json()) as Record<
      string,
      unknown
    >;
    openid = (await (await fetch(`${sts.url}/.well-known/openid-configuration`)).json()) as Record<
      string,
      unknown
    >;
  });
  after(() => sts.stop());

  test("both documents pass the SDK's metadata schemas, and its discovery returns the issuer's", async () => {
    assert.deepEqual(oauth, openid);
    assert.equal(OAuthMetadataSchema.safeParse(oauth).success, true);
    assert.equal(OpenIdProviderDiscoveryMetadataSchema.safeParse(openid).success, true);
    const discovered = await discoverAuthorizationServerMetadata(sts.url);
    assert.equal(discovered?.issuer, sts.url);
    assert.equal(discovered?.token_endpoint, `${sts.url}/token`);
  });

  test("they carry what MCP clients check: grants, DPoP algorithms, PKCE, RFC 9207, endpoints", () => {
    assert.equal(oauth.issuer, sts.url);
    assert.equal(oauth.token_endpoint, `${sts.url}/token`);
    // Required by the SDK's schema even for client_credentials; no response type is served.
    assert.equal(oauth.authorization_endpoint, `${sts.url}/auth`);
    assert.deepEqual(oauth.response_types_supported, []);
    assert.deepEqual((oauth.grant_types_supported as string[]).toSorted(), [
      "client_credentials",
      "urn:ietf:params:oauth:grant-type:token-exchange",
    ]);
    assert.deepEqual(oauth.dpop_signing_alg_values_supported, ["ES256", "Ed25519", "EdDSA"]);
    assert.deepEqual(oauth.code_challenge_methods_supported, ["S256"]);
    assert.equal(oauth.authorization_response_iss_parameter_supported, true);
    assert.deepEqual(oauth.token_endpoint_auth_methods_supported, [
      "client_secret_basic",
      "client_secret_post",
      "private_key_jwt",
    ]);
  });
});
