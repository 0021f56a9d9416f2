import type { IncomingHttpHeaders } from "node:http";
import {
  type Attributes,
  type Context,
  context,
  isSpanContextValid,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import { safeText } from "./safe_text.js";

/**
 * OpenTelemetry tracing at the STS's edge, through `@opentelemetry/api` only: without an SDK registered
 * by the operator every call here is a no-op. Spans carry identifiers, outcomes and reason codes, never a
 * token, a secret or a header value.
 */

/** The instrumentation scope of the STS's spans. */
export const TRACER_NAME = "countersign";

/** The longest text an agent chose (e.g. a claimed `client_id`) put into a span attribute or log line. */
export const MAX_ATTRIBUTE_TEXT = 128;

/** Reads W3C trace context (`traceparent`, `tracestate`) from Node's (and Koa's) lower-cased headers. */
export const headerGetter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (headers) => Object.keys(headers),
  get: (headers, key) => headers[key.toLowerCase()],
};

/**
 * `value` cut to {@link MAX_ATTRIBUTE_TEXT} characters, or `undefined` when it is not a string: for text
 * a caller chose, before it goes into a log line (JSON, escaped by the logger) or, through
 * {@link attributeText}, a span.
 */
export function boundedText(value: unknown): string | undefined {
  return typeof value === "string" ? value.slice(0, MAX_ATTRIBUTE_TEXT) : undefined;
}

/** {@link boundedText} with its control and bidi characters made visible ({@link safeText}). */
export function attributeText(value: unknown): string | undefined {
  const bounded = boundedText(value);
  return bounded === undefined ? undefined : safeText(bounded);
}

/** A span for one request this STS answers, and the context to run its handler in. */
export interface RequestSpan {
  readonly span: Span;
  /** The parent context with {@link span} set: handlers run in it, so their own spans nest under it. */
  readonly context: Context;
}

/**
 * Starts the span of one HTTP request. Its parent: the active span when an instrumentation (e.g. of
 * `http`) already made one for this request (having read `traceparent` itself: its sampler decides);
 * otherwise, when `trustIncomingContext` is true (config `tracing.trust_incoming_context`), the
 * caller's W3C trace context, extracted from `headers` by the registered propagator, so an agent's
 * trace goes on into the STS. When it is false (the default) the caller's context is not the parent:
 * the span starts a trace of its own, linked to the caller's span, so a caller's sampled flag cannot
 * make a parent-based sampler record every request it sends. Without an active span this is the
 * request's SERVER span, else an INTERNAL child.
 */
export function startRequestSpan(
  method: string,
  route: string,
  headers: IncomingHttpHeaders,
  options: { readonly trustIncomingContext: boolean; readonly attributes?: Attributes },
): RequestSpan {
  const active = context.active();
  const nested = trace.getSpan(active) !== undefined;
  const incoming = nested ? active : propagation.extract(active, headers, headerGetter);
  const parent = nested || options.trustIncomingContext ? incoming : active;
  const caller = nested || options.trustIncomingContext ? undefined : trace.getSpanContext(incoming);
  const span = trace.getTracer(TRACER_NAME).startSpan(
    `${method} ${route}`,
    {
      kind: nested ? SpanKind.INTERNAL : SpanKind.SERVER,
      attributes: { "http.request.method": method, "http.route": route, ...options.attributes },
      ...(caller !== undefined && isSpanContextValid(caller) ? { links: [{ context: caller }] } : {}),
    },
    parent,
  );
  return { span, context: trace.setSpan(parent, span) };
}

/**
 * Ends a request's span with its HTTP status. Only a 5xx marks the span as failed: a refusal (4xx) is
 * the STS working, as OpenTelemetry's HTTP conventions say for server spans.
 */
export function endRequestSpan(span: Span, status: number | undefined): void {
  if (status !== undefined) {
    span.setAttribute("http.response.status_code", status);
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  }
  span.end();
}

/**
 * The route template @koa/router matched for `ctx` (e.g. `/approvals/:id/approve`), or `fallback`: a
 * span's name and `http.route` take the template, whose values are few, never the path.
 */
export function matchedRoute(ctx: object, fallback: string): string {
  const matched = (ctx as { _matchedRoute?: unknown })._matchedRoute;
  return typeof matched === "string" ? matched : fallback;
}

/** What a refusal thrown through an HTTP handler may tell its span. */
interface Refused {
  readonly status?: unknown;
  readonly reason?: unknown;
  readonly error?: unknown;
}

/**
 * Runs one Koa request's handler in its span (see {@link startRequestSpan}): the span records the route,
 * the status and, for a refusal that carries one, its stable `reason` and wire `error`. An error that is
 * no refusal is recorded by its class name only (its message may quote input) and passed on.
 * `trustIncomingContext`: config `tracing.trust_incoming_context`.
 */
export async function traceRequest(
  ctx: { readonly method: string; readonly headers: IncomingHttpHeaders; status: number },
  route: string,
  trustIncomingContext: boolean,
  handler: () => Promise<void>,
): Promise<void> {
  const { span, context: spanContext } = startRequestSpan(ctx.method, route, ctx.headers, {
    trustIncomingContext,
  });
  let status: number | undefined;
  try {
    await context.with(spanContext, handler);
    status = ctx.status;
    span.setAttribute("countersign.outcome", status < 400 ? "ok" : "refused");
  } catch (error) {
    const refused = error as Refused;
    if (typeof refused.status === "number" && typeof refused.reason === "string") {
      status = refused.status;
      span.setAttributes({
        "countersign.outcome": "refused",
        "countersign.reason": refused.reason,
        ...(typeof refused.error === "string" ? { "error.type": refused.error } : {}),
      });
    } else {
      span.setAttributes({
        "countersign.outcome": "error",
        "error.type": error instanceof Error ? error.name : "_OTHER",
      });
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    throw error;
  } finally {
    endRequestSpan(span, status);
  }
}
