import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createMcpGateway, type McpGateway } from "./gateway.js";
import { DEFAULTS, type McpGatewayOptions } from "./options.js";

/** Options of {@link startMcpGateway}: the gateway's plus where to listen. */
export interface McpGatewayServerOptions extends McpGatewayOptions {
  /** TCP port; 0 picks a free one. Default 0. */
  port?: number;
  /** Address to bind. Default `127.0.0.1`. */
  host?: string;
  /** Most client connections open at once (`server.maxConnections`); more are dropped. Default 4,096. */
  maxConnections?: number;
}

/** A listening MCP gateway. */
export interface RunningMcpGateway {
  readonly gateway: McpGateway;
  readonly server: Server;
  /** `http://<host>:<port>` as bound. */
  readonly url: string;
  /** Stops accepting connections, ends open ones (SSE streams too) and stops the gateway. */
  close(): Promise<void>;
}

/** Creates an MCP gateway and serves it over HTTP (TLS belongs to a front proxy or load balancer). */
export async function startMcpGateway(options: McpGatewayServerOptions): Promise<RunningMcpGateway> {
  const { port = 0, host = "127.0.0.1", maxConnections, ...gatewayOptions } = options;
  if (maxConnections !== undefined && (!Number.isSafeInteger(maxConnections) || maxConnections < 1)) {
    throw new TypeError("startMcpGateway: invalid options: maxConnections must be a positive integer");
  }
  const gateway = createMcpGateway(gatewayOptions);
  const server = createServer(gateway.handler);
  // Idle keep-alive connections count too; the open exchanges are bounded by the gateway itself.
  server.maxConnections = maxConnections ?? DEFAULTS.maxConnections;
  // Long SSE responses are normal; the request (headers and body) must still arrive in time.
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
  } catch (error) {
    gateway.close();
    throw error;
  }
  const address = server.address() as AddressInfo;
  const hostPart = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    gateway,
    server,
    url: `http://${hostPart}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        gateway.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
