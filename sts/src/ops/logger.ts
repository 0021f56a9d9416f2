import pino, { type DestinationStream, type Level, type Logger } from "pino";
import { LogRepeats, type LogRepeatsOptions, REPEAT_EXEMPT } from "./log_repeats.js";
import { safeJsonText } from "./safe_text.js";

export type { Logger };
export { REPEAT_EXEMPT };

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

/** The repeat bound of each logger {@link createLogger} made, for {@link flushRepeatedLines}. */
const repeatBounds = new WeakMap<Logger, LogRepeats>();

/**
 * Writes now the `log.repeats_suppressed` lines of every window still open (at shutdown, so the last
 * window's count is not lost). A logger not made by {@link createLogger} has none.
 */
export function flushRepeatedLines(logger: Logger): void {
  repeatBounds.get(logger)?.flush();
}

/** Default of {@link LoggerOptions.maxRepeats}: lines per group and 10-second window. */
export const DEFAULT_MAX_LOG_REPEATS = 100;

/** Options of {@link createLogger}. */
export interface LoggerOptions extends Partial<Omit<LogRepeatsOptions, "maxPerWindow">> {
  /**
   * Most lines of one group (level, message, `event`, `reason`) per window (10 s): env `LOG_MAX_REPEATS`.
   * Default {@link DEFAULT_MAX_LOG_REPEATS}.
   */
  readonly maxRepeats?: number;
}

/**
 * Creates the JSON logger. Secrets and tokens are censored by key (see `REDACTED_PATHS`). Every line
 * is JSON, so C0 controls (ESC, CR, LF, …) in logged strings are escaped by the serializer; the
 * characters JSON leaves raw (DEL, C1 controls, bidi controls, U+2028/U+2029) are escaped too
 * ({@link safeJsonText}), so text an agent wrote cannot act on the terminal of whoever reads the log.
 * Repeated lines are bounded ({@link LogRepeats}): past `maxRepeats` lines of one group in a window,
 * the rest are counted into one `log.repeats_suppressed` line when the window ends, so a caller
 * looping on a refused request cannot grow the log one line per request.
 */
export function createLogger(
  level: string,
  destination?: DestinationStream,
  options: LoggerOptions = {},
): Logger {
  const repeats = new LogRepeats(
    { ...options, maxPerWindow: options.maxRepeats ?? DEFAULT_MAX_LOG_REPEATS },
    (lines) => {
      const label = logger.levels.labels[lines.level] as Level | undefined;
      if (!label) return;
      logger[label](
        {
          event: "log.repeats_suppressed",
          repeated: { msg: lines.msg, event: lines.event, reason: lines.reason },
          suppressed: lines.suppressed,
          window_seconds: lines.windowSeconds,
        },
        "repeated log lines left out",
      );
    },
  );
  const logger: Logger = pino(
    {
      level,
      base: { service: "countersign" },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: {
        streamWrite: safeJsonText,
        logMethod(args, method, levelValue) {
          const [first, second] = args as unknown[];
          const message = typeof first === "string" ? first : second;
          if (!repeats.admit(levelValue, message, typeof first === "string" ? undefined : first)) return;
          method.apply(this, args);
        },
      },
    },
    destination,
  );
  repeatBounds.set(logger, repeats);
  return logger;
}
