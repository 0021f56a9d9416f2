import pino, { type DestinationStream, type Logger } from "pino";
import { safeJsonText } from "./safe_text.js";

export type { Logger };

/**
 * Keys that may hold secrets or whole tokens, wherever they appear in a log object. Censored rather
 * than dropped so a reader sees that a value was there.
 */
const REDACTED_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "req.headers.authorization",
  "req.headers.dpop",
  "req.headers.cookie",
  "client_secret",
  "*.client_secret",
  "access_token",
  "*.access_token",
  "subject_token",
  "*.subject_token",
  "actor_token",
  "*.actor_token",
  "client_assertion",
  "*.client_assertion",
  "token",
  "*.token",
  "privateJwk",
  "*.privateJwk",
];

/**
 * Creates the JSON logger. Secrets and tokens are censored by key (see `REDACTED_PATHS`). Every line
 * is JSON, so C0 controls (ESC, CR, LF, …) in logged strings are escaped by the serializer; the
 * characters JSON leaves raw (DEL, C1 controls, bidi controls, U+2028/U+2029) are escaped too
 * ({@link safeJsonText}), so text an agent wrote cannot act on the terminal of whoever reads the log.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "countersign" },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: { streamWrite: safeJsonText },
    },
    destination,
  );
}
