/** A fetch function (the WHATWG one, or the SDK's `FetchLike`). */
export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt";

/** Why the helper could not get a token: a decision of the human, or an STS refusal. */
export class CountersignApprovalError extends Error {
  override readonly name = "CountersignApprovalError";
  /**
   * `approval_denied`, `approval_revoked`, `approval_expired`, `approval_timeout` (no decision within
   * the wait), or the STS's `error` (e.g. `invalid_grant`, `invalid_request`).
   */
  readonly code: string;
  /** The approval concerned, when there is one. */
  readonly approvalId: string | undefined;
  constructor(code: string, message: string, approvalId?: string) {
    super(message);
    this.code = code;
    this.approvalId = approvalId;
  }
}

/** What the agent asks a human to approve (`POST /approvals`). */
export interface ApprovalRequest {
  scope: readonly string[];
  tools?: readonly string[] | undefined;
  call?: { tool: string; arguments: Record<string, unknown> } | undefined;
}

/** How long and how often the decision is polled: doubling from `initialDelayMs` to `maxDelayMs`, for at most `maxWaitMs`. */
export interface ApprovalWait {
  initialDelayMs: number;
  maxDelayMs: number;
  maxWaitMs: number;
}

/** The settings the STS client needs. */
export interface StsClientSettings {
  issuer: string;
  resource: string;
  clientId: string;
  clientSecret: string;
  task: string;
  subject: string | undefined;
  wait: ApprovalWait;
  fetch: FetchLike;
}

/** An access token and when to stop using it (milliseconds since the epoch). */
export interface MintedToken {
  accessToken: string;
  expiresAt: number;
}

function basic(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString("base64")}`;
}

async function readJson(response: Response): Promise<Record<string, unknown>> {
  const text = await response.text();
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function refusal(
  body: Record<string, unknown>,
  status: number,
  approvalId?: string,
): CountersignApprovalError {
  const error = typeof body.error === "string" ? body.error : `http_${status}`;
  const description = typeof body.error_description === "string" ? body.error_description : `HTTP ${status}`;
  return new CountersignApprovalError(error, description, approvalId);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The STS calls of the helper: `client_credentials` for `approvals:request`, `POST /approvals`,
 * polling `GET /approvals/{id}`, and the RFC 8693 token exchange under an approval.
 */
export class StsClient {
  #credential: MintedToken | undefined;
  constructor(private readonly settings: StsClientSettings) {}

  async #form(params: Record<string, string>): Promise<Record<string, unknown>> {
    const { issuer, clientId, clientSecret } = this.settings;
    const response = await this.settings.fetch(`${issuer}/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: basic(clientId, clientSecret),
      },
      body: new URLSearchParams(params).toString(),
    });
    const body = await readJson(response);
    if (!response.ok || typeof body.access_token !== "string") throw refusal(body, response.status);
    return body;
  }

  /** The agent's own `approvals:request` token (client_credentials), cached until shortly before expiry. */
  async #agentToken(): Promise<string> {
    if (this.#credential !== undefined && this.#credential.expiresAt > Date.now()) {
      return this.#credential.accessToken;
    }
    const body = await this.#form({ grant_type: "client_credentials", scope: "approvals:request" });
    this.#credential = toMinted(body);
    return this.#credential.accessToken;
  }

  async #api(
    path: string,
    init: RequestInit = {},
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const token = await this.#agentToken();
    const response = await this.settings.fetch(`${this.settings.issuer}${path}`, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` },
    });
    return { status: response.status, body: await readJson(response) };
  }

  /** `POST /approvals`: returns the new approval's id. */
  async requestApproval(request: ApprovalRequest): Promise<string> {
    const { resource, task, subject } = this.settings;
    const { status, body } = await this.#api("/approvals", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        resource,
        scope: request.scope.join(" "),
        task,
        ...(subject !== undefined ? { subject } : {}),
        ...(request.tools !== undefined ? { tools: request.tools } : {}),
        ...(request.call !== undefined ? { call: request.call } : {}),
      }),
    });
    if (status !== 201 || typeof body.id !== "string") throw refusal(body, status);
    return body.id;
  }

  /** Polls `GET /approvals/{id}` with backoff until it is approved (resolves) or anything else final (throws). */
  async waitForDecision(id: string): Promise<void> {
    const { initialDelayMs, maxDelayMs, maxWaitMs } = this.settings.wait;
    const deadline = Date.now() + maxWaitMs;
    let delay = initialDelayMs;
    for (;;) {
      const { status, body } = await this.#api(`/approvals/${encodeURIComponent(id)}`);
      if (status !== 200) throw refusal(body, status, id);
      const state = body.status;
      if (state === "approved") return;
      if (state !== "pending") {
        throw new CountersignApprovalError(
          `approval_${String(state)}`,
          `The approval is ${String(state)}`,
          id,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new CountersignApprovalError("approval_timeout", "No decision was made in time", id);
      }
      await sleep(Math.min(delay, left));
      delay = Math.min(delay * 2, maxDelayMs);
    }
  }

  /** RFC 8693 token exchange of `subjectToken` under approval `id`, for the resource. */
  async exchange(id: string, subjectToken: string): Promise<MintedToken> {
    try {
      return toMinted(
        await this.#form({
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: JWT_TOKEN_TYPE,
          resource: this.settings.resource,
          authorization_details: JSON.stringify([{ type: "agent_task", approval_id: id }]),
        }),
      );
    } catch (error) {
      if (error instanceof CountersignApprovalError) {
        throw new CountersignApprovalError(error.code, error.message, id);
      }
      throw error;
    }
  }

  /** The token-exchange parameters under approval `id` (for the SDK's `prepareTokenRequest`). */
  exchangeParams(id: string, subjectToken: string): URLSearchParams {
    return new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: subjectToken,
      subject_token_type: JWT_TOKEN_TYPE,
      resource: this.settings.resource,
      authorization_details: JSON.stringify([{ type: "agent_task", approval_id: id }]),
    });
  }
}

/** Tokens are used until 30 seconds (or a tenth of their life, if shorter) before they expire. */
function toMinted(body: Record<string, unknown>): MintedToken {
  const lifetime = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
  const margin = Math.min(30, lifetime / 10);
  return { accessToken: body.access_token as string, expiresAt: Date.now() + (lifetime - margin) * 1000 };
}
