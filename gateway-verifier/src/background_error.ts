import { FetchFailure } from "./http_fetch.js";
import type {
  VerifierBackgroundErrorCode,
  VerifierBackgroundErrorReason,
  VerifierBackgroundErrorSource,
  VerifierOptions,
} from "./types.js";

const WHAT: Readonly<Record<VerifierBackgroundErrorCode, string>> = {
  jwks_fetch_failed: "JWKS fetch failed",
  revocation_poll_failed: "revocation feed poll failed",
  revocation_stream_failed: "revocation stream failed",
  revocation_not_configured: "revocation not configured",
  revocation_list_full: "revocation list full",
  not_ready: "verifier not ready",
};

/**
 * Codes that report a degraded state rather than a failure: never recorded as their source's last
 * failure (`ready()`'s cause), never given to the deprecated `onBackgroundError`.
 */
const WARNINGS: ReadonlySet<VerifierBackgroundErrorCode> = new Set([
  "revocation_not_configured",
  "revocation_list_full",
]);

/** The `process.emitWarning` code of `revocation_list_full` when no `onError` hook is set. */
const LIST_FULL_WARNING = "COUNTERSIGN_REVOCATION_LIST_FULL";

let warnedListFull = false;

/**
 * What went wrong in the verifier's background (JWKS, revocation feed), where no request sees it:
 * given to `onError`, and the rejection of `ready()`. `code`, `source` and `reason` are stable; the
 * message is for people (it names the URL, never a token), the `cause` is the underlying error.
 */
export class VerifierBackgroundError extends Error {
  override name = "VerifierBackgroundError";
  /** What happened (see {@link VerifierBackgroundErrorCode}). */
  readonly code: VerifierBackgroundErrorCode;
  /** Which background task: `jwks` or `revocation`. */
  readonly source: VerifierBackgroundErrorSource;
  /** Why (see {@link VerifierBackgroundErrorReason}). */
  readonly reason: VerifierBackgroundErrorReason;
  /** The HTTP status, when `reason` is `http_error`. */
  readonly status: number | undefined;

  constructor(
    code: VerifierBackgroundErrorCode,
    source: VerifierBackgroundErrorSource,
    reason: VerifierBackgroundErrorReason,
    message: string,
    options: { cause?: unknown; status?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.source = source;
    this.reason = reason;
    this.status = options.status;
  }

  /** `failure` (thrown by a background fetch) as a background error of `code` from `source`. */
  static from(
    code: VerifierBackgroundErrorCode,
    source: VerifierBackgroundErrorSource,
    failure: unknown,
  ): VerifierBackgroundError {
    if (failure instanceof VerifierBackgroundError) return failure;
    const error = failure instanceof Error ? failure : new Error(String(failure));
    const reason = error instanceof FetchFailure ? error.reason : "invalid_response";
    const status = error instanceof FetchFailure ? error.status : undefined;
    return new VerifierBackgroundError(code, source, reason, `${WHAT[code]}: ${error.message}`, {
      cause: error,
      ...(status === undefined ? {} : { status }),
    });
  }
}

/** The verifier's background errors: handed to its hooks, the last of each source kept for `ready()`. */
export interface BackgroundErrors {
  /** Records `error` as its source's last and hands it to the hooks. Never throws. */
  report(error: VerifierBackgroundError): void;
  /** The last failure reported by `source`, if any. */
  last(source: VerifierBackgroundErrorSource): VerifierBackgroundError | undefined;
}

/** Calls `hook`, ignoring whatever it throws or, for an async hook, rejects with. */
function callSafely(hook: () => unknown): void {
  try {
    const returned = hook();
    if (returned instanceof Promise) returned.catch(() => undefined);
  } catch {
    // A failing hook must not break the verifier's background tasks or its requests.
  }
}

/**
 * Background error handling for `options.onError` (every error) and the deprecated
 * `options.onBackgroundError` (failures only, not the warnings). Without `onError`,
 * `revocation_list_full` is said once per process through `process.emitWarning` (type
 * `CountersignWarning`), like Node's own warnings: a fail-open that must not go unseen.
 */
export function createBackgroundErrors(options: VerifierOptions): BackgroundErrors {
  const { onError, onBackgroundError } = options;
  const lastBySource = new Map<VerifierBackgroundErrorSource, VerifierBackgroundError>();
  return {
    report(error) {
      const warning = WARNINGS.has(error.code);
      if (!warning) lastBySource.set(error.source, error);
      if (onError !== undefined) callSafely(() => onError(error));
      else if (error.code === "revocation_list_full" && !warnedListFull) {
        warnedListFull = true;
        process.emitWarning(error.message, { type: "CountersignWarning", code: LIST_FULL_WARNING });
      }
      if (onBackgroundError !== undefined && !warning) {
        callSafely(() => onBackgroundError(error, error.source));
      }
    },
    last: (source) => lastBySource.get(source),
  };
}

const REVOCATION_OFF =
  'countersign verifier: revocation is not configured, so tokens of revoked approvals are accepted until they expire; set `revocation: { url: "<issuer>/revocations" }`, or `revocation: false` to silence this warning';

let warnedWithoutHook = false;

/**
 * Says once that revocation is off because `revocation` is unset: through `onError` when set (once per
 * verifier), else through `process.emitWarning` (once per process, like Node's own warnings). On the
 * next tick, so a hook that refers to the verifier being created can run.
 */
export function warnRevocationNotConfigured(options: VerifierOptions, errors: BackgroundErrors): void {
  if (options.onError !== undefined) {
    process.nextTick(() =>
      errors.report(
        new VerifierBackgroundError(
          "revocation_not_configured",
          "revocation",
          "not_configured",
          REVOCATION_OFF,
        ),
      ),
    );
    return;
  }
  if (warnedWithoutHook) return;
  warnedWithoutHook = true;
  process.emitWarning(REVOCATION_OFF, {
    type: "CountersignWarning",
    code: "COUNTERSIGN_REVOCATION_NOT_CONFIGURED",
  });
}
