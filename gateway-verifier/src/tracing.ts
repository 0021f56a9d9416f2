import type { VerifyResult } from "./types.js";

/** A span attribute's value (OpenTelemetry's primitive `AttributeValue`s). */
export type VerifierSpanAttribute = string | number | boolean;

/**
 * The part of an OpenTelemetry span the verifier uses. Structural: an `@opentelemetry/api` `Span` is
 * one, and so is anything else with these methods.
 */
export interface VerifierSpan {
  setAttribute(key: string, value: VerifierSpanAttribute): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  end(): void;
}

/**
 * The part of an OpenTelemetry tracer the verifier uses: pass `trace.getTracer("my-gateway")` from
 * `@opentelemetry/api`. Structural, so this package needs no OpenTelemetry dependency; the span starts
 * in the tracer's active context, so with a context manager registered (the Node SDK does) it nests
 * under the gateway's request span.
 */
export interface VerifierTracer {
  startSpan(name: string, options?: { attributes?: Record<string, VerifierSpanAttribute> }): VerifierSpan;
}

/** The name of the span of one `verify()`. */
export const VERIFY_SPAN_NAME = "countersign.verify";

/** OpenTelemetry's `SpanStatusCode.ERROR`. */
const STATUS_ERROR = 2;

/** Attributes of a finished verification: its outcome and, for a refusal, the reason and status. */
function attributesOf(result: VerifyResult): Record<string, VerifierSpanAttribute> {
  if (result.ok) return { "countersign.outcome": "allow" };
  return {
    "countersign.outcome": "deny",
    "countersign.reason": result.reason,
    "error.type": result.error,
    "http.response.status_code": result.status,
  };
}

/**
 * Runs one verification in a span named {@link VERIFY_SPAN_NAME} that records its outcome
 * (`allow`/`deny`) and, for a refusal, its reason code, `error` and status; a 5xx (JWKS or revocation
 * feed unavailable) marks the span as failed. Never a token, a claim or a header. Without a `tracer`,
 * or when the tracer throws, verification runs exactly as it would untraced.
 */
export function traceVerification(
  tracer: VerifierTracer | undefined,
  verify: () => Promise<VerifyResult>,
): Promise<VerifyResult> {
  if (tracer === undefined) return verify();
  let span: VerifierSpan;
  try {
    span = tracer.startSpan(VERIFY_SPAN_NAME);
  } catch {
    return verify();
  }
  return verify().then((result) => {
    try {
      for (const [key, value] of Object.entries(attributesOf(result))) span.setAttribute(key, value);
      if (!result.ok && result.status >= 500) span.setStatus({ code: STATUS_ERROR });
      span.end();
    } catch {
      // A tracer's failure never changes a verification's outcome.
    }
    return result;
  });
}
