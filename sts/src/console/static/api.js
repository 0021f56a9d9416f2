// The approval API, as the console uses it. Paths are relative to the page (/console), so a server
// mounted under a path prefix keeps working. The token lives in sessionStorage only: never
// localStorage, never a cookie.

const TOKEN_KEY = "countersign.approver_token";

/**
 * An approval as the API returns it. Times are ISO 8601.
 * @typedef {{ id: string, status: string, client_id: string, resource: string, scope: string,
 *   requested_scope?: string, task: string, subject: string | null, max_tokens: number,
 *   tokens_issued: number, rate_limit: { per_second: number, burst: number } | null,
 *   requested_by: string, approved_by: string | null, created_at: string, decided_at: string | null,
 *   expires_at: string, decision_reason?: string | null, revoked_at?: string | null,
 *   tools?: string[] | null, resources?: string[] | null, prompts?: string[] | null,
 *   call?: { tool: string, arguments: Record<string, unknown>, arguments_digest: string } | null }} Approval
 */

/** One page of `GET /approvals`. @typedef {{ approvals: Approval[], next_cursor: string | null }} ApprovalPage */

/**
 * One event of an approval's audit trail.
 * @typedef {{ at: string, event: string, outcome: string, reason: string | null, actor: string | null }} AuditEvent
 */

/** `GET /approvals/{id}/audit`: the latest events, `truncated` when older ones were left out. @typedef {{ events: AuditEvent[], truncated?: boolean }} AuditTrail */

/** A development approver token from `POST /console/dev-token`. @typedef {{ access_token: string, token_type: string, expires_in: number, sub: string }} DevToken */

/** An error answer of the API: `status`, `error` and `error_description`. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} error
   * @param {string} description
   */
  constructor(status, error, description) {
    super(description || error || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.error = error;
  }
}

/** @returns {string | null} */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** @param {string} token */
export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * The unverified claims of a JWT, for display only (the server verifies every call).
 * @param {string} token
 * @returns {Record<string, unknown> | null}
 */
export function peekClaims(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const value = JSON.parse(new TextDecoder().decode(bytes));
    return value && typeof value === "object" ? value : null;
  } catch {
    return null;
  }
}

/**
 * Calls the API and returns the parsed JSON, or throws an {@link ApiError}.
 * @param {string} method
 * @param {string} path relative to the site root, without the leading slash
 * @param {{ body?: unknown, token?: string | null }} [options]
 * @returns {Promise<unknown>}
 */
export async function call(method, path, options = {}) {
  const token = options.token === undefined ? storedToken() : options.token;
  /** @type {Record<string, string>} */
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  /** @type {RequestInit} */
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network_error", "the server could not be reached");
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && typeof body.error === "string" ? body.error : "http_error";
    const description =
      body && typeof body.error_description === "string" ? body.error_description : `HTTP ${response.status}`;
    throw new ApiError(response.status, error, description);
  }
  return body;
}

/** @param {string} id */
function approvalPath(id) {
  return `approvals/${encodeURIComponent(id)}`;
}

/**
 * @param {string} status
 * @param {number} limit
 * @returns {Promise<ApprovalPage>}
 */
export function listApprovals(status, limit) {
  return /** @type {Promise<ApprovalPage>} */ (
    call("GET", `approvals?status=${encodeURIComponent(status)}&limit=${limit}`)
  );
}

/**
 * @param {string} id
 * @param {Record<string, unknown>} terms
 */
export function approve(id, terms) {
  return call("POST", `${approvalPath(id)}/approve`, { body: terms });
}

/**
 * @param {string} id
 * @param {string} reason
 */
export function deny(id, reason) {
  return call("POST", `${approvalPath(id)}/deny`, { body: reason ? { reason } : {} });
}

/**
 * @param {string} id
 * @param {string} reason
 */
export function revoke(id, reason) {
  return call("POST", `${approvalPath(id)}/revoke`, { body: reason ? { reason } : {} });
}

/**
 * @param {string} id
 * @returns {Promise<AuditTrail>}
 */
export function auditTrail(id) {
  return /** @type {Promise<AuditTrail>} */ (call("GET", `${approvalPath(id)}/audit`));
}

/**
 * @param {string} sub
 * @returns {Promise<DevToken>}
 */
export function devToken(sub) {
  return /** @type {Promise<DevToken>} */ (call("POST", "console/dev-token", { body: { sub }, token: null }));
}
