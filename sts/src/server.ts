import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { App } from "./app.js";
import { clientErrorListener } from "./http/client_errors.js";
import { isLoopbackAddress } from "./http/loopback_peer.js";

/**
 * The start-up warning for an STS in dev mode bound to `boundAddress` when that is not a loopback
 * address (e.g. `HOST=0.0.0.0`): its development issuer and console are then reachable from the
 * network (the console's dev-token route still answers loopback peers only). Undefined otherwise.
 */
export function devModeBindWarning(devMode: boolean, boundAddress: string): string | undefined {
  if (!devMode || isLoopbackAddress(boundAddress)) return undefined;
  return `dev_mode is on and the STS listens on ${boundAddress}, not on loopback: development mode trusts its development issuer and must not face a network; set HOST=127.0.0.1, or dev_mode: false in a config file`;
}

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
  const warning = devModeBindWarning(app.config.dev_mode, address.address);
  if (warning !== undefined) {
    app.logger.warn({ event: "dev_mode.non_loopback_bind", address: address.address }, warning);
  }
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
