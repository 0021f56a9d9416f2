import { readEventStream } from "../../gateway-verifier/src/revocation.js";
import type { TestApp } from "../helpers/app.js";

/** An allow-all exchange policy, so these suites do not depend on the shipped Cedar policies. */
export const allowAllPolicy = { authorizeExchange: async () => ({ allowed: true as const }) };

/** Revokes through the approval API, as a human approver (`bob`) from the dev issuer. */
export async function revokeViaApi(sts: TestApp, approvalId: string): Promise<number> {
  const token = await sts.app.services.devIssuer!.mint({ sub: "bob", usage: "approver" });
  const response = await fetch(`${sts.url}/approvals/${approvalId}/revoke`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  await response.arrayBuffer();
  return response.status;
}

/** One event received on a stream, with the time it arrived (performance.now() milliseconds). */
export interface ReceivedEvent {
  readonly id: string | undefined;
  readonly data: Record<string, unknown>;
  readonly at: number;
}

/** An open `GET /revocations/stream`, collecting events until closed. */
export interface OpenStream {
  readonly status: number;
  readonly headers: Headers;
  readonly events: ReceivedEvent[];
  /** Resolves when the server ends the stream (or it is aborted). */
  readonly ended: Promise<void>;
  /** Resolves with the first event matching `predicate`, or rejects after `timeoutMs`. */
  next(predicate: (event: ReceivedEvent) => boolean, timeoutMs?: number): Promise<ReceivedEvent>;
  close(): void;
}

/** Opens the stream at `url` (e.g. `<sts>/revocations/stream`) with optional headers. */
export async function openStream(url: string, headers: Record<string, string> = {}): Promise<OpenStream> {
  const controller = new AbortController();
  const response = await fetch(url, {
    headers: { accept: "text/event-stream", ...headers },
    signal: controller.signal,
  });
  const events: ReceivedEvent[] = [];
  const waiters = new Set<() => void>();
  const ended =
    response.ok && response.body
      ? readEventStream(response.body, (data, id) => {
          events.push({ id, data: JSON.parse(data) as Record<string, unknown>, at: performance.now() });
          for (const waiter of waiters) waiter();
        }).catch(() => {})
      : response.arrayBuffer().then(() => {});
  return {
    status: response.status,
    headers: response.headers,
    events,
    ended,
    next(predicate, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = events.find(predicate);
          if (found) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching event within ${timeoutMs} ms (got ${events.length})`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    close: () => controller.abort(),
  };
}

/** The p-th percentile (0..100) of `values`, nearest-rank. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] ?? Number.NaN;
}
