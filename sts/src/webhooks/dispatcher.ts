import { createHash, randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import type { ApprovalJson } from "../approvals/model.js";
import type { WebhookConfig, WebhookEventType, WebhookRequestedLimit } from "../config/schema.js";
import type { Database } from "../db/schema.js";
import { takeWindowPoint } from "../limits/window_counter.js";
import type { Logger } from "../ops/logger.js";
import { type WebhookApprovalJson, webhookApproval } from "./payload.js";
import { EVENT_ID_HEADER, SIGNATURE_HEADER, signWebhookPayload } from "./signature.js";
import {
  claimDueDeliveries,
  enqueueDeliveries,
  foldIntoSummaries,
  markAttemptFailed,
  markDelivered,
  releaseDelivery,
  type WebhookDelivery,
} from "./store.js";

/** The JSON body of every webhook delivery. */
export interface WebhookEvent {
  /** What happened, e.g. `approval.approved`. */
  type: WebhookEventType;
  /** The event id (`evt_…`), also in `Countersign-Event-Id`; stable across retries. */
  id: string;
  /** When the event happened, ISO 8601. */
  created_at: string;
  /**
   * The approval as the approval API returns it after the event, except a bound call's arguments:
   * their digest and a preview of at most 1 KiB ({@link webhookApproval}).
   */
  approval: WebhookApprovalJson;
}

/** The type of {@link WebhookSummaryEvent}. */
export const REQUESTED_SUMMARY_EVENT = "approval.requested_summary";

/**
 * The JSON body of the one event per webhook that stands for an agent's `approval.requested` events past
 * `approvals.webhook_requested_limit` in one window. Sent to the webhooks subscribed to
 * `approval.requested`, when the window ends.
 */
export interface WebhookSummaryEvent {
  type: typeof REQUESTED_SUMMARY_EVENT;
  /** The event id (`evt_…`), also in `Countersign-Event-Id`; one per agent and window. */
  id: string;
  /** When the first of its events was folded in, ISO 8601. */
  created_at: string;
  /** The agent that asked. */
  client_id: string;
  /** The window, ISO 8601: events from its start to its end beyond the limit are counted here. */
  window_started_at: string;
  window_ends_at: string;
  /** How many `approval.requested` events of the agent this window were folded in (not sent one by one). */
  folded: number;
  /** The last approval folded in. */
  latest_approval_id: string;
}

/** The default of {@link WebhookDispatcherOptions.requestedLimit} (`approvals.webhook_requested_limit`). */
export const DEFAULT_WEBHOOK_REQUESTED_LIMIT: Readonly<WebhookRequestedLimit> = Object.freeze({
  events: 10,
  window_seconds: 300,
});

/** Delivery tuning. Defaults suit production; tests shorten the delays. */
export interface WebhookDeliveryTuning {
  /** Attempts per delivery before it is given up (`failed`). Default 5. */
  maxAttempts: number;
  /** Delay before the first retry, in milliseconds; doubles per retry. Default 10 000. */
  baseDelayMs: number;
  /** Upper bound on one retry delay, in milliseconds. Default 300 000 (5 minutes). */
  maxDelayMs: number;
  /** One attempt's timeout (connect, headers and body), in milliseconds. Default 10 000. */
  timeoutMs: number;
  /** How often due retries (and other instances' rows) are looked for, in milliseconds. Default 1000. */
  pollIntervalMs: number;
  /** Deliveries in flight at once per instance. Default 8. */
  concurrency: number;
}

/** The defaults of {@link WebhookDeliveryTuning}: 5 attempts spread over at most ~2.5 minutes of backoff. */
export const DEFAULT_WEBHOOK_TUNING: Readonly<WebhookDeliveryTuning> = Object.freeze({
  maxAttempts: 5,
  baseDelayMs: 10_000,
  maxDelayMs: 300_000,
  timeoutMs: 10_000,
  pollIntervalMs: 1000,
  concurrency: 8,
});

/** Options of {@link createWebhookDispatcher}. */
export interface WebhookDispatcherOptions {
  readonly db: Kysely<Database>;
  readonly webhooks: readonly WebhookConfig[];
  readonly logger: Logger;
  readonly tuning?: Partial<WebhookDeliveryTuning>;
  /** The HTTP client (tests may wrap it). Default: the global `fetch`. */
  readonly fetch?: typeof fetch;
  /**
   * Per agent, the `approval.requested` events sent one by one per window; the rest of the window is
   * folded into one {@link WebhookSummaryEvent} per webhook (`approvals.webhook_requested_limit`).
   * Default {@link DEFAULT_WEBHOOK_REQUESTED_LIMIT}.
   */
  readonly requestedLimit?: WebhookRequestedLimit;
}

/** Sends approval events to the configured webhooks. */
export interface WebhookDispatcher {
  /**
   * Records `type` for every webhook subscribed to it (in the outbox table) and wakes the sender; an
   * agent's `approval.requested` past `requestedLimit` in its window is folded into the window's
   * {@link WebhookSummaryEvent} instead. Never throws: a failure is logged, and the API call that caused
   * the event is unaffected.
   * @returns the event id (the summary's when folded), or undefined when no webhook is subscribed or the
   * outbox write failed.
   */
  emit(type: WebhookEventType, approval: ApprovalJson): Promise<string | undefined>;
  /** Runs one delivery round now and resolves when it is done (tests; operators never need it). */
  flush(): Promise<void>;
  /** Stops promptly: no new rounds, in-flight attempts aborted and given back uncounted. */
  close(): Promise<void>;
}

/** The URL without query or fragment (which may carry secrets), for logs and stored errors. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return "(invalid url)";
  }
}

/**
 * The delay before retry `n` (1-based), in milliseconds: exponential (`base · 2^(n-1)`, capped at
 * `maxDelayMs`) with "equal jitter" (a uniformly random half of it added to the other half), so
 * receivers recovering from an outage are not hit by every sender at once.
 */
export function retryDelayMs(retry: number, tuning: WebhookDeliveryTuning, random = Math.random): number {
  const exponential = Math.min(tuning.maxDelayMs, tuning.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return exponential / 2 + random() * (exponential / 2);
}

/**
 * The webhook dispatcher: an outbox in `webhook_deliveries`, drained by every STS instance.
 *
 * - At least once: a delivery is a row before the API call answers; a restart (or another instance)
 *   picks up pending rows. The one window is between the decision's commit and the outbox insert (a
 *   crash there loses the notification; the decision and its audit event are kept).
 * - Never blocking: the API call waits only for the outbox insert; sending happens in the background.
 * - Bounded: at most `maxAttempts` attempts, a `timeoutMs` each, retried with exponential backoff and
 *   jitter; a 2xx answer is success, anything else (including a redirect, which is not followed) a
 *   failure. Per agent, at most `requestedLimit.events` `approval.requested` deliveries per webhook per
 *   window, plus one summary: an agent's flood of requests adds at most `events + 1` rows and POSTs per
 *   webhook per window, however many requests it makes.
 */
export function createWebhookDispatcher(options: WebhookDispatcherOptions): WebhookDispatcher {
  const { db, webhooks, logger } = options;
  const tuning: WebhookDeliveryTuning = { ...DEFAULT_WEBHOOK_TUNING, ...options.tuning };
  const requestedLimit = options.requestedLimit ?? DEFAULT_WEBHOOK_REQUESTED_LIMIT;
  const send = options.fetch ?? fetch;
  const byUrl = new Map(webhooks.map((webhook) => [webhook.url, webhook]));
  const leaseSeconds = Math.ceil(tuning.timeoutMs / 1000) + 30;
  const abort = new AbortController();
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let again = false;
  /** The soonest retry due within this round, in milliseconds from now (shorter than a poll). */
  let soonestRetryMs = Number.POSITIVE_INFINITY;

  function schedule(delayMs: number) {
    if (closed || webhooks.length === 0) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void runRound();
    }, delayMs);
    timer.unref();
  }

  function runRound(): Promise<void> {
    if (closed) return Promise.resolve();
    if (round) {
      again = true;
      return round;
    }
    round = (async () => {
      soonestRetryMs = Number.POSITIVE_INFINITY;
      try {
        // Bounded: a backlog is drained a batch per pass, at most 10 passes per round.
        for (let pass = 0; pass < 10 && !closed; pass++) {
          again = false;
          const batch = await claimDueDeliveries(db, tuning.concurrency, leaseSeconds);
          await Promise.all(batch.map((delivery) => deliver(delivery)));
          if (batch.length < tuning.concurrency && !again) break;
        }
      } catch (error) {
        if (!closed) logger.warn({ err: { message: (error as Error).message } }, "webhook round failed");
      } finally {
        round = undefined;
        schedule(again ? 0 : Math.min(tuning.pollIntervalMs, soonestRetryMs));
      }
    })();
    return round;
  }

  async function deliver(delivery: WebhookDelivery): Promise<void> {
    const webhook = byUrl.get(delivery.webhook_url);
    const where = redactUrl(delivery.webhook_url);
    if (!webhook) {
      await markAttemptFailed(db, delivery, "the webhook is no longer configured", null);
      return;
    }
    let failure: string;
    try {
      const response = await send(webhook.url, {
        method: "POST",
        redirect: "manual",
        headers: {
          "content-type": "application/json",
          "user-agent": "Countersign-Webhooks/1",
          [SIGNATURE_HEADER]: signWebhookPayload(webhook.secret, delivery.body),
          [EVENT_ID_HEADER]: delivery.event_id,
          "Countersign-Event-Type": delivery.event_type,
        },
        body: delivery.body,
        signal: AbortSignal.any([abort.signal, AbortSignal.timeout(tuning.timeoutMs)]),
      });
      await response.body?.cancel().catch(() => {});
      if (response.status >= 200 && response.status < 300) {
        await markDelivered(db, delivery);
        logger.info(
          {
            event_id: delivery.event_id,
            type: delivery.event_type,
            url: where,
            attempt: delivery.attempts + 1,
          },
          "webhook delivered",
        );
        return;
      }
      failure = `HTTP ${response.status}`;
    } catch (error) {
      if (closed) {
        await releaseDelivery(db, delivery).catch(() => {});
        return;
      }
      const cause = (error as { cause?: { code?: string } }).cause?.code;
      failure = (error as Error).name === "TimeoutError" ? "timed out" : (cause ?? (error as Error).message);
    }
    const attempt = delivery.attempts + 1;
    const retryIn = attempt >= tuning.maxAttempts ? null : retryDelayMs(attempt, tuning) / 1000;
    await markAttemptFailed(db, delivery, failure, retryIn);
    logger.warn(
      {
        event_id: delivery.event_id,
        type: delivery.event_type,
        url: where,
        attempt,
        error: failure,
        ...(retryIn === null ? { gave_up: true } : { retry_in_seconds: Math.round(retryIn * 1000) / 1000 }),
      },
      retryIn === null ? "webhook delivery failed; giving up" : "webhook delivery failed; will retry",
    );
    if (retryIn !== null) soonestRetryMs = Math.min(soonestRetryMs, retryIn * 1000);
  }

  schedule(0);

  /**
   * Counts an `approval.requested` event against its agent's window; past the limit, folds it into the
   * window's summary delivery for each webhook and returns the summary's event id, else undefined (send
   * it one by one).
   */
  async function foldPastLimit(
    subscribed: readonly WebhookConfig[],
    approval: ApprovalJson,
  ): Promise<string | undefined> {
    const windowMs = requestedLimit.window_seconds * 1000;
    const point = await takeWindowPoint(db, `webhook_requested:${approval.client_id}`, windowMs);
    if (point.points <= requestedLimit.events) return undefined;
    const windowEnd = point.windowEnd.toISOString();
    const id = `evt_${createHash("sha256")
      .update(`${REQUESTED_SUMMARY_EVENT}\n${approval.client_id}\n${windowEnd}`)
      .digest("base64url")
      .slice(0, 22)}`;
    const summary: WebhookSummaryEvent = {
      type: REQUESTED_SUMMARY_EVENT,
      id,
      created_at: new Date().toISOString(),
      client_id: approval.client_id,
      window_started_at: new Date(point.windowEnd.getTime() - windowMs).toISOString(),
      window_ends_at: windowEnd,
      folded: 1,
      latest_approval_id: approval.id,
    };
    const body = JSON.stringify(summary);
    await foldIntoSummaries(
      db,
      subscribed.map((webhook) => ({
        eventId: id,
        webhookUrl: webhook.url,
        eventType: REQUESTED_SUMMARY_EVENT,
        body,
        dueAt: point.windowEnd,
      })),
    );
    return id;
  }

  return {
    async emit(type, approval) {
      const subscribed = webhooks.filter((webhook) => webhook.events.includes(type));
      if (subscribed.length === 0 || closed) return undefined;
      if (type === "approval.requested") {
        try {
          const folded = await foldPastLimit(subscribed, approval);
          if (folded !== undefined) return folded;
        } catch (error) {
          logger.error(
            { err: { message: (error as Error).message }, type, approval_id: approval.id },
            "webhook event could not be queued",
          );
          return undefined;
        }
      }
      const event: WebhookEvent = {
        type,
        id: `evt_${randomBytes(16).toString("base64url")}`,
        created_at: new Date().toISOString(),
        approval: webhookApproval(approval),
      };
      const body = JSON.stringify(event);
      try {
        await enqueueDeliveries(
          db,
          subscribed.map((webhook) => ({
            eventId: event.id,
            webhookUrl: webhook.url,
            eventType: type,
            approvalId: approval.id,
            body,
          })),
        );
      } catch (error) {
        logger.error(
          { err: { message: (error as Error).message }, event_id: event.id, type, approval_id: approval.id },
          "webhook event could not be queued",
        );
        return undefined;
      }
      setImmediate(() => void runRound());
      return event.id;
    },
    flush: () => runRound(),
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      abort.abort();
      await round?.catch(() => {});
    },
  };
}
