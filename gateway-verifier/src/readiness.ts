import { type BackgroundErrors, VerifierBackgroundError } from "./background_error.js";
import { describeUrl } from "./http_fetch.js";
import type { KeySource } from "./jwks.js";
import type { RevocationState } from "./revocation.js";
import type { RevocationOptions, VerifierBackgroundErrorSource } from "./types.js";

/** What {@link waitUntilReady} waits for. */
export interface ReadinessOptions {
  keys: KeySource;
  /** Where the keys are fetched from; undefined for a static JWKS (loaded once, nothing to retry). */
  jwksUri: string | undefined;
  /** Unset: no revocation feed to wait for. */
  revocation: (RevocationState & { options: RevocationOptions }) | undefined;
  timeoutMs: number;
  /** The last failure of each source, for the rejection's reason and cause. */
  errors: BackgroundErrors;
  closed(): boolean;
}

const MAX_FEED_RETRY_MS = 1_000;
/** The longest delay `setTimeout` honours (a longer one fires at once). */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Resolves once the keys are loaded and the revocation feed (when configured) has been read
 * successfully, retrying: the JWKS through `keys.refresh()` (cooldown-limited), the feed at most once
 * per min(interval, 1 s). Rejects with `not_ready` after `timeoutMs` or when the verifier is closed.
 */
export async function waitUntilReady(options: ReadinessOptions): Promise<void> {
  const { keys, revocation, timeoutMs } = options;
  let timer: NodeJS.Timeout | undefined;
  let expired = false;
  const deadline = new Promise<"expired">((resolve) => {
    timer = setTimeout(
      () => {
        expired = true;
        resolve("expired");
      },
      Math.min(timeoutMs, MAX_TIMER_MS),
    );
  });
  const notReady = (source: VerifierBackgroundErrorSource): VerifierBackgroundError => {
    const last = options.errors.last(source);
    const closed = options.closed();
    const reason = closed ? "closed" : (last?.reason ?? "timeout");
    const what =
      source === "jwks"
        ? options.jwksUri === undefined
          ? "the static JWKS"
          : `the JWKS at ${describeUrl(options.jwksUri)}`
        : `the revocation feed at ${describeUrl(revocation?.options.url ?? "")}`;
    const message = closed
      ? `verifier not ready: closed before ${what} was loaded`
      : `verifier not ready: ${what} was not loaded within ${timeoutMs} ms${last === undefined ? "" : ` (last error: ${last.message})`}`;
    return new VerifierBackgroundError("not_ready", source, reason, message, {
      ...(last === undefined ? {} : { cause: last }),
      ...(last?.status === undefined || closed ? {} : { status: last.status }),
    });
  };
  /** Waits for `step` unless the deadline passes first; false when it did. */
  const before = async (step: Promise<unknown>): Promise<boolean> =>
    (await Promise.race([step, deadline])) !== "expired" && !expired;
  try {
    if (!(await before(keys.settled()))) throw notReady("jwks");
    while (!keys.loaded) {
      if (options.jwksUri === undefined || options.closed()) throw notReady("jwks");
      if (!(await before(keys.refresh()))) throw notReady("jwks");
    }
    if (revocation === undefined) return;
    if (!(await before(revocation.source.initial))) throw notReady("revocation");
    const retryMs = Math.min(revocation.options.intervalMs ?? 5_000, MAX_FEED_RETRY_MS);
    while (!revocation.list.synced) {
      if (options.closed()) throw notReady("revocation");
      const pause = new Promise<void>((resolve) => setTimeout(resolve, retryMs).unref());
      if (!(await before(pause))) throw notReady("revocation");
      if (!(await before(revocation.source.refresh()))) throw notReady("revocation");
    }
  } finally {
    clearTimeout(timer);
  }
}
