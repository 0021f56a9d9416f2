/**
 * The README quick start's protected API: `GET /contacts` (scope `crm:read`) behind the gateway verifier,
 * on plain `node:http`. Run it with `npx tsx examples/quickstart/crm_api.ts`.
 *
 * In your own service: `npm install @countersign/gateway-verifier` and import from
 * `"@countersign/gateway-verifier"` instead of the sources below.
 *
 * Environment: `COUNTERSIGN_URL` the STS (default `http://127.0.0.1:8080`), `CRM_API_PORT` where to
 * listen (default 3000, on 127.0.0.1).
 */
import http from "node:http";
import { connectVerifier, createVerifier, type VerifiedRequest } from "../../gateway-verifier/src/index.js";

const sts = (process.env.COUNTERSIGN_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const port = Number(process.env.CRM_API_PORT ?? 3000);

const verifier = createVerifier({
  issuer: sts, // the tokens' iss; keys from <issuer>/jwks
  audience: "https://crm.example.test", // this API's resource id (the tokens' aud)
  revocation: { url: `${sts}/revocations` }, // a revoked approval is refused from the next poll on
});
const guard = connectVerifier(verifier, {
  requiredScopes: (method) => (method === "GET" || method === "HEAD" ? ["crm:read"] : ["crm:write"]),
});

const server = http.createServer((req, res) => {
  guard(req, res, (error) => {
    const verified = (req as VerifiedRequest).countersign;
    const path = (req.url ?? "/").split("?", 1)[0];
    const [status, body] =
      error || !verified
        ? [500, { error: "server_error" }]
        : path === "/contacts"
          ? [
              200,
              {
                contacts: [{ name: "Ada Lovelace" }],
                subject: verified.subject,
                client_id: verified.clientId,
              },
            ]
          : [404, { error: "not_found" }];
    res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    res.end(JSON.stringify(body));
  });
});

await verifier.ready();
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`CRM API listening on http://127.0.0.1:${port} (tokens from ${sts})\n`);
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    verifier.close();
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
