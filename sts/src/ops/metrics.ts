import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";

/** The STS's Prometheus metrics, in a registry of its own (one per app, so tests can build many). */
export interface Metrics {
  readonly registry: Registry;
  /** HTTP requests by route group, method and status. */
  readonly httpRequests: Counter<"route" | "method" | "status">;
  /** HTTP request duration in seconds. */
  readonly httpDuration: Histogram<"route" | "method">;
  /**
   * Every `POST /token`, once, by grant type (`client_credentials`, `token_exchange`, `other`) and
   * OAuth error (`none` on success, `other` for a code outside the token endpoint's): counted from
   * oidc-provider's events (ops/token_endpoint.ts), so refusals before any grant runs count too.
   */
  readonly tokenRequests: Counter<"grant_type" | "error">;
  /** Exchanges written per database call (`countersign_issue`): how much batching is happening. */
  readonly issueBatchSize: Histogram;
}

/** Creates the metrics registry, with Node's default process metrics. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "countersign_" });
  return {
    registry,
    httpRequests: new Counter({
      name: "countersign_http_requests_total",
      help: "HTTP requests by route group, method and status",
      labelNames: ["route", "method", "status"],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "countersign_http_request_duration_seconds",
      help: "HTTP request duration in seconds",
      labelNames: ["route", "method"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    tokenRequests: new Counter({
      name: "countersign_token_requests_total",
      help: "Token endpoint requests by grant type and OAuth error (none on success)",
      labelNames: ["grant_type", "error"],
      registers: [registry],
    }),
    issueBatchSize: new Histogram({
      name: "countersign_issue_batch_size",
      help: "Token exchanges written per database call (an agent's concurrent exchanges go together)",
      buckets: [1, 2, 4, 8, 16, 32, 64],
      registers: [registry],
    }),
  };
}
