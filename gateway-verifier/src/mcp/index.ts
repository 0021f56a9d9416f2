/** The MCP gateway: RFC 9728 metadata, MCP challenges, per-tool authorization and the proxy. */
export type { ApprovedTargets, BoundCall } from "./agent_task.js";
export { approvedTargets } from "./agent_task.js";
export {
  type CallTokenStore,
  createMemoryCallTokenStore,
  createRedisCallTokenStore,
  type MemoryCallTokenStoreOptions,
  type RedisCallTokenStoreOptions,
  type RedisSetClient,
} from "./call_tokens.js";
export { canonicalResourceUri, resourceMetadataUrl } from "./canonical.js";
export { McpGatewayConfigError, type McpGatewayConfigFile, mcpGatewayOptionsFromConfig } from "./config.js";
export {
  createMcpGateway,
  type McpGateway,
  type McpRequestHandler,
  type ProtectedResourceMetadata,
} from "./gateway.js";
export { argumentsDigest, canonicalJson, numbersAreCanonical } from "./jcs.js";
export { decodeMirroredValue } from "./mirrored_headers.js";
export type { McpCaller, McpDecision, McpGatewayOptions, UpstreamHeaders } from "./options.js";
export type { McpPolicy, McpTarget } from "./policy.js";
export { MCP_REASONS, type McpReason } from "./reasons.js";
export { type McpGatewayServerOptions, type RunningMcpGateway, startMcpGateway } from "./server.js";
export type { SessionBindingOptions } from "./sessions.js";
