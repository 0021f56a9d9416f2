import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StreamableHTTPClientTransport,
  type StreamableHTTPClientTransportOptions,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type McpGatewayServerOptions,
  type RunningMcpGateway,
  startMcpGateway,
} from "../../gateway-verifier/src/index.js";
import {
  baseConfig,
  basicAuth,
  freePort,
  postForm,
  startTestApp,
  TEST_SECRET,
  type TestApp,
} from "../helpers/app.js";
import type { TestEngine } from "../helpers/database.js";
import { agentTask, exchange } from "../helpers/exchange.js";
import { startUpstream, type Upstream } from "./upstream.js";

/** The gateway options a test of {@link startMcpStack} chooses. */
export type StackGatewayOptions = Omit<
  McpGatewayServerOptions,
  "port" | "host" | "upstream" | "resource" | "issuer"
>;

/** Options of {@link startMcpStack}. */
export interface McpStackOptions {
  engine: TestEngine;
  /** The scopes of the MCP resource added to {@link baseConfig}. */
  scopes: readonly string[];
  /**
   * Gateway options besides where it listens, the upstream, the resource and the issuer; or a function
   * of the issuer (the STS's URL) returning them, for options that must name the STS.
   */
  gateway?: StackGatewayOptions | ((issuer: string) => StackGatewayOptions);
}

/**
 * A real STS (with the gateway's MCP resource configured), the SDK upstream of `upstream.ts` and an
 * MCP gateway in front of it, all on 127.0.0.1, plus a token of the approver `bob`.
 */
export interface McpStack {
  readonly sts: TestApp;
  readonly upstream: Upstream;
  readonly gateway: RunningMcpGateway;
  /** The gateway's MCP endpoint and resource identifier, `http://127.0.0.1:PORT/mcp`. */
  readonly resource: string;
  /** An approver token (`sub` bob) for the approval API. */
  readonly approverToken: string;
  /** Connects an SDK client to `url` (default: the gateway); {@link McpStack.close} closes it. */
  connect(transport: StreamableHTTPClientTransportOptions, url?: string): Promise<Client>;
  /** Connects an SDK client to the gateway sending `Authorization: Bearer <token>`. */
  connectWithToken(token: string): Promise<Client>;
  /** Closes the clients, the gateway, the upstream and the STS. */
  close(): Promise<void>;
}

/** Starts an {@link McpStack}. */
export async function startMcpStack(options: McpStackOptions): Promise<McpStack> {
  const upstream = await startUpstream();
  const port = await freePort();
  const resource = `http://127.0.0.1:${port}/mcp`;
  const config = baseConfig();
  const sts = await startTestApp({
    engine: options.engine,
    config: {
      ...config,
      resources: [...(config.resources as unknown[]), { id: resource, scopes: options.scopes }],
    },
  });
  const gateway = await startMcpGateway({
    ...(typeof options.gateway === "function" ? options.gateway(sts.url) : options.gateway),
    port,
    upstream: upstream.url,
    resource,
    issuer: sts.url,
  });
  const approverToken = await sts.app.services.devIssuer!.mint({ sub: "bob", usage: "approver" });
  const clients: Client[] = [];
  const connect = async (transport: StreamableHTTPClientTransportOptions, url = resource) => {
    const client = new Client({ name: "test-agent", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(url), transport));
    clients.push(client);
    return client;
  };
  return {
    sts,
    upstream,
    gateway,
    resource,
    approverToken,
    connect,
    connectWithToken: (token) => connect({ requestInit: { headers: { authorization: `Bearer ${token}` } } }),
    async close() {
      for (const client of clients) await client.close();
      await gateway.close();
      await upstream.close();
      await sts.stop();
    },
  };
}

/** A client_credentials token of `billing-agent` with scope `approvals:request` (asks for approvals). */
export async function approvalsRequestToken(sts: TestApp): Promise<string> {
  const credential = await postForm(
    `${sts.url}/token`,
    { grant_type: "client_credentials", scope: "approvals:request" },
    { authorization: basicAuth("billing-agent", TEST_SECRET) },
  );
  assert.equal(credential.status, 200);
  return credential.body.access_token as string;
}

/** Exchanges a subject token of `alice` for an access token to `stack.resource` under an approval. */
export async function exchangeForApproval(stack: McpStack, approvalId: string): Promise<string> {
  const subjectToken = await stack.sts.app.services.devIssuer!.mint({ sub: "alice", usage: "subject" });
  const minted = await exchange(stack.sts.url, {
    subject_token: subjectToken,
    authorization_details: agentTask(approvalId),
    resource: stack.resource,
  });
  assert.equal(minted.status, 200, JSON.stringify(minted.body));
  return minted.body.access_token as string;
}
