import http from "node:http";
import { type Kysely, sql } from "kysely";
import { readEventStream } from "../../../gateway-verifier/src/revocation.js";
import type { Database } from "../../../sts/src/db/schema.js";
import type { TestApp } from "../../helpers/app.js";

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

/** One event received on a stream. */
export interface ReceivedEvent {
  readonly id: string | undefined;
  readonly data: Record<string, unknown>;
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
          events.push({ id, data: JSON.parse(data) as Record<string, unknown> });
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

/** `GET <sts>/revocations<query>`: status, headers and JSON body. */
export async function getFeed(
  url: string,
  query = "",
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const response = await fetch(`${url}/revocations${query}`);
  return {
    status: response.status,
    headers: response.headers,
    body: (await response.json()) as Record<string, unknown>,
  };
}

/** The numeric part of a feed cursor `<epoch>.<n>`. */
export function position(cursor: unknown): bigint {
  const text = String(cursor);
  return BigInt(text.slice(text.indexOf(".") + 1));
}

/** Options of {@link floodRevocations}. */
export interface FloodOptions {
  /** `revoked_at` this many seconds ago. Default 0. */
  readonly revokedSecondsAgo?: number;
  /** Prefix of the approval ids (`<prefix><n>`). Default `apr_flood_`. */
  readonly prefix?: string;
}

/**
 * Writes `count` revoked approvals that minted no token and their feed entries in one statement each
 * (entries in id order, so cursors ascend with `n`). Returns the approval ids in feed order.
 */
export async function floodRevocations(
  db: Kysely<Database>,
  count: number,
  options: FloodOptions = {},
): Promise<string[]> {
  const prefix = options.prefix ?? "apr_flood_";
  const ago = options.revokedSecondsAgo ?? 0;
  await sql`insert into approvals (id, status, client_id, resource, scope, requested_scope, task, subject,
      max_tokens, tokens_issued, requested_by, approved_by, decided_by, decided_at, expires_at, revoked_at)
    select ${prefix} || g, 'revoked', 'billing-agent', 'https://crm.example.test', 'crm:read', 'crm:read',
      'flood', 'alice', 10, 0, 'billing-agent', 'bob', 'bob', now(), now() + interval '1 hour',
      now() - make_interval(secs => ${ago})
    from generate_series(1, ${count}) g`.execute(db);
  await sql`insert into revocations (approval_id, reason, revoked_at)
    select ${prefix} || g, 'revoked', now() - make_interval(secs => ${ago})
    from generate_series(1, ${count}) g order by g`.execute(db);
  return Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);
}

/**
 * Lets `seconds` pass for what the database holds (the clock cannot be moved): every approval's
 * expiry, every token's `iat`/`exp` and every feed entry's times move that far into the past.
 */
export async function letTimePass(db: Kysely<Database>, seconds: number): Promise<void> {
  const by = sql`make_interval(secs => ${seconds})`;
  await sql`update approvals set expires_at = expires_at - ${by}, created_at = created_at - ${by},
    decided_at = decided_at - ${by}, revoked_at = revoked_at - ${by}`.execute(db);
  await sql`update issued_tokens set iat = iat - ${by}, exp = exp - ${by}`.execute(db);
  await sql`update revocations set revoked_at = revoked_at - ${by},
    needed_until = needed_until - ${by}`.execute(db);
}

/** A stream request made with `node:http` (to choose the local address), and its answer. */
export interface StreamRequest extends OpenStream {
  /** The JSON body of a refusal (status other than 200); undefined for a stream. */
  readonly refusal: Record<string, unknown> | undefined;
}

/**
 * Opens `<sts>/revocations/stream<query>` from `localAddress` (any 127.0.0.0/8 address is local on
 * Linux), with `headers`.
 */
export function openStreamFrom(
  url: string,
  options: { localAddress?: string; headers?: Record<string, string>; query?: string } = {},
): Promise<StreamRequest> {
  return new Promise((resolve, reject) => {
    const request = http.get(
      `${url}/revocations/stream${options.query ?? ""}`,
      {
        localAddress: options.localAddress,
        headers: { accept: "text/event-stream", ...options.headers },
      },
      (response) => {
        const status = response.statusCode ?? 0;
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          if (typeof value === "string") headers.set(name, value);
        }
        const events: ReceivedEvent[] = [];
        const waiters = new Set<() => void>();
        const close = (): void => {
          request.destroy();
        };
        const next: OpenStream["next"] = (predicate, timeoutMs = 5000) =>
          new Promise((resolveEvent, rejectEvent) => {
            const check = (): void => {
              const found = events.find(predicate);
              if (found) {
                waiters.delete(check);
                clearTimeout(timer);
                resolveEvent(found);
              }
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              rejectEvent(new Error(`no matching event within ${timeoutMs} ms (got ${events.length})`));
            }, timeoutMs);
            waiters.add(check);
            check();
          });
        if (status !== 200) {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            resolve({
              status,
              headers,
              events,
              ended: Promise.resolve(),
              next,
              close,
              refusal: text ? (JSON.parse(text) as Record<string, unknown>) : {},
            });
          });
          return;
        }
        const ended = readEventStream(response, (data, id) => {
          events.push({ id, data: JSON.parse(data) as Record<string, unknown> });
          for (const waiter of waiters) waiter();
        }).catch(() => {});
        resolve({ status, headers, events, ended, next, close, refusal: undefined });
      },
    );
    request.on("error", reject);
  });
}
