/**
 * The Countersign ext_authz service for examples/envoy/envoy.yaml:
 *   npx tsx examples/envoy/ext_authz.ts
 * Env: COUNTERSIGN_ISSUER (http://127.0.0.1:8080), RESOURCE (https://crm.example.test), PORT (9191).
 */
import { createVerifier, startExtAuthzServer } from "../../gateway-verifier/src/index.js";

const issuer = process.env.COUNTERSIGN_ISSUER ?? "http://127.0.0.1:8080";
const resource = process.env.RESOURCE ?? "https://crm.example.test";

const verifier = createVerifier({
  issuer,
  audience: resource,
  rateLimit: { perSecond: 5, burst: 10 },
  revocation: { url: `${issuer}/revocations` },
  onBackgroundError: (error, source) => console.error(`${source}: ${error.message}`),
});

const { port } = await startExtAuthzServer(verifier, {
  pathPrefix: "/authz",
  publicOrigin: resource,
  // Reads need crm:read, anything else crm:write.
  requiredScopes: (method) => (method === "GET" || method === "HEAD" ? ["crm:read"] : ["crm:write"]),
  port: Number(process.env.PORT ?? "9191"),
});
console.log(`countersign ext_authz listening on 127.0.0.1:${port}`);
