import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Verifier } from "../../gateway-verifier/src/index.js";

/** One route of a demo API: the scopes it needs and which verifier guards it. */
export interface DemoRoute {
  method: string;
  path: string;
  requiredScopes: readonly string[];
  /** The verifier of this route (a stricter one may guard sensitive routes). */
  verifier: Verifier;
  /** The JSON answered when the verifier lets the request through. */
  answer: (subject: string, clientId: string) => unknown;
}

/** A running demo API. */
export interface DemoApi {
  readonly name: string;
  readonly url: string;
  stop(): Promise<void>;
}

/**
 * A small JSON API behind the gateway verifier (node:http, no framework). Refusals carry the
 * verifier's status, headers (`WWW-Authenticate`, `Retry-After`) and a body with `error`,
 * `error_description` and the stable `reason` code, so the demo can show exactly why.
 */
export async function startDemoApi(name: string, routes: readonly DemoRoute[]): Promise<DemoApi> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?", 1)[0] ?? "/";
    const route = routes.find((candidate) => candidate.method === req.method && candidate.path === path);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      const text = JSON.stringify(body);
      res.writeHead(status, {
        ...headers,
        "content-type": "application/json",
        "cache-control": "no-store",
        "content-length": Buffer.byteLength(text),
      });
      res.end(text);
    };
    if (!route) {
      send(404, { error: "not_found", error_description: "no such route" });
      return;
    }
    route.verifier
      .verify({
        authorization: req.headers.authorization,
        method: req.method,
        url: `http://${req.headers.host ?? "127.0.0.1"}${path}`,
        requiredScopes: route.requiredScopes,
      })
      .then(
        (result) => {
          if (!result.ok) {
            const headers: Record<string, string> = {};
            for (const [header, value] of Object.entries(result.headers)) {
              if (value !== undefined) headers[header] = value;
            }
            send(
              result.status,
              { error: result.error, error_description: result.description, reason: result.reason },
              headers,
            );
            return;
          }
          send(200, route.answer(result.subject, result.clientId));
        },
        () => send(500, { error: "server_error", error_description: "the gateway failed" }),
      );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
