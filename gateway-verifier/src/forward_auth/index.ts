export { canonicalPath } from "./canonical_path.js";
export {
  type ForwardAuthConfig,
  ForwardAuthConfigError,
  type ForwardAuthConfigFile,
  forwardAuthOptionsFromConfig,
} from "./config.js";
export {
  createForwardAuthHandler,
  type ForwardAuthDecision,
  type ForwardAuthOptions,
  type ForwardAuthServerOptions,
  IDENTITY_HEADERS,
  REFUSAL_HEADERS,
  startForwardAuthServer,
} from "./handler.js";
export { FORWARD_AUTH_REASONS, type ForwardAuthReason } from "./reasons.js";
export type { ForwardAuthRoute } from "./routes.js";
