import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { App } from "./app.js";
import { clientErrorListener } from "./http/client_errors.js";

/** A listening STS. */
export interface RunningServer {
  readonly server: http.Server;
  /** `http://host:port` actually bound (port 0 resolves to the chosen port). */
  readonly url: string;
  /**
   * Graceful stop: stop accepting, let in-flight requests finish (up to `graceMs`, default 10 s),
   * then close the app (database pool).
   */
  stop(graceMs?: number): Promise<void>;
}

/** Starts listening on `host:port`. */
export async function listen(app: App, host: string, port: number): Promise<RunningServer> {
  const server = http.createServer(app.koa.callback());
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.maxHeadersCount = 100;
  server.on("clientError", clientErrorListener(app.clientErrors));
  server.listen(port, host);
  await once(server, "listening");
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  let stopping: Promise<void> | undefined;
  return {
    server,
    url: `http://${shownHost}:${address.port}`,
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        app.drain();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        await closed;
        clearTimeout(timer);
        await app.close();
      })();
      return stopping;
    },
  };
}
