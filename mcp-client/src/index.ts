/**
 * `@countersign/mcp-client`: the agent side of an MCP server behind Countersign. It asks a human for
 * approval, waits for the decision, exchanges the agent's subject token (RFC 8693), caches the token,
 * steps up (asking for the union) when the gateway refuses a tool or a scope, and retries after 429.
 *
 * ```ts
 * const agent = createCountersignAgent({ issuer, server, clientId, clientSecret, subjectToken, task, scope });
 * const transport = new StreamableHTTPClientTransport(new URL(server), { fetch: agent.fetch, authProvider: agent.provider });
 * ```
 */
import type { OAuthClientProvider } from "@modelcontextprotocol/sdk/client/auth.js";
import type { OAuthClientMetadata, OAuthTokens } from "@modelcontextprotocol/sdk/shared/auth.js";
import {
  type ApprovalRequest,
  CountersignApprovalError,
  type FetchLike,
  type MintedToken,
  StsClient,
} from "./sts_client.js";

export { CountersignApprovalError, type FetchLike } from "./sts_client.js";

/** Options of {@link createCountersignAgent}. */
export interface CountersignAgentOptions {
  /** The Countersign STS (its `/token` and `/approvals`). */
  issuer: string;
  /** The MCP endpoint the transport talks to (the gateway), e.g. `https://tools.example.test/mcp`. */
  server: string;
  /** The resource identifier (RFC 8707) of the MCP server at the STS. Default: `server`. */
  resource?: string;
  clientId: string;
  clientSecret: string;
  /** The user's token the agent acts with (the RFC 8693 `subject_token`), fetched when needed. */
  subjectToken: () => string | Promise<string>;
  /** What the agent means to do, shown to the approver. */
  task: string;
  /** The scopes to ask for first. */
  scope: readonly string[];
  /** The tools to ask for first; absent: the approval names none (every tool its scopes allow). */
  tools?: readonly string[];
  /** Tools whose every call needs its own approval of its exact arguments (per-call approvals). */
  perCallTools?: readonly string[];
  /** The `sub` tokens under the approval may carry (recorded on the approval). */
  subject?: string;
  /** Polling of the decision. Default: 250 ms doubling to 5 s, for at most 10 minutes. */
  approvalWait?: { initialDelayMs?: number; maxDelayMs?: number; maxWaitMs?: number };
  /** Most step-ups (new approvals for the union) per request. Default 2. */
  maxStepUps?: number;
  /** Most retries after 429 per request. Default 3. */
  maxRateLimitRetries?: number;
  /** Longest `Retry-After` honoured, in seconds; longer gives up with the 429. Default 30. */
  maxRetryAfterSeconds?: number;
  /** The fetch used underneath. Default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Told about every approval the helper asks for (e.g. to show the agent's user where to approve). */
  onApprovalRequested?: (approvalId: string, request: ApprovalRequest) => void;
}

/** The helper: a fetch for the SDK transport, and an `OAuthClientProvider` over the same state. */
export interface CountersignAgent {
  /** Pass as the transport's `fetch`. Requests to other URLs than `server` go through untouched. */
  readonly fetch: FetchLike;
  /** Pass as the transport's `authProvider`: non-interactive, tokens by token exchange under an approval. */
  readonly provider: OAuthClientProvider;
  /** The approval tokens are minted under now (undefined before the first request). */
  readonly approvalId: string | undefined;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The `error` and `scope` of a `WWW-Authenticate: Bearer` challenge. */
function challengeOf(response: Response): { error?: string; scope?: string } {
  const header = response.headers.get("www-authenticate") ?? "";
  const result: { error?: string; scope?: string } = {};
  for (const match of header.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
    if (match[1] === "error") result.error = match[2];
    if (match[1] === "scope") result.scope = match[2];
  }
  return result;
}

/** The tool and arguments of a single (non-batch) `tools/call` body, if it is one. */
function toolCallOf(body: unknown): { tool: string; arguments: Record<string, unknown> } | undefined {
  if (typeof body !== "string") return undefined;
  let message: unknown;
  try {
    message = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) return undefined;
  const { method, params } = message as {
    method?: unknown;
    params?: { name?: unknown; arguments?: unknown };
  };
  if (method !== "tools/call" || typeof params?.name !== "string") return undefined;
  const args = params.arguments;
  return {
    tool: params.name,
    arguments:
      typeof args === "object" && args !== null && !Array.isArray(args)
        ? (args as Record<string, unknown>)
        : {},
  };
}

/** A response whose body was read, rebuilt so that the caller can read it again. */
async function buffered(response: Response): Promise<{ response: Response; body: Record<string, unknown> }> {
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null) body = value as Record<string, unknown>;
  } catch {
    // Not JSON: no reason to read.
  }
  const rebuilt = new Response(text, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
  return { response: rebuilt, body };
}

/** 401 reasons of the gateway that mean the human withdrew the approval: never ask again by ourselves. */
const WITHDRAWN = new Set(["approval_revoked"]);

/**
 * Creates the helper. Security: it never logs tokens or secrets; it asks for a new approval only to
 * step up after a refusal more scopes or tools can fix, and never after the approval was revoked or
 * denied (those throw {@link CountersignApprovalError}).
 */
export function createCountersignAgent(options: CountersignAgentOptions): CountersignAgent {
  const base: FetchLike = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
  const server = new URL(options.server);
  const endpoint = `${server.origin}${server.pathname}`;
  const sts = new StsClient({
    issuer: options.issuer.replace(/\/+$/, ""),
    resource: options.resource ?? options.server,
    clientId: options.clientId,
    clientSecret: options.clientSecret,
    task: options.task,
    subject: options.subject,
    wait: {
      initialDelayMs: options.approvalWait?.initialDelayMs ?? 250,
      maxDelayMs: options.approvalWait?.maxDelayMs ?? 5000,
      maxWaitMs: options.approvalWait?.maxWaitMs ?? 600_000,
    },
    fetch: base,
  });
  const perCall = new Set(options.perCallTools ?? []);
  const maxStepUps = options.maxStepUps ?? 2;
  const maxRateLimitRetries = options.maxRateLimitRetries ?? 3;
  const maxRetryAfter = options.maxRetryAfterSeconds ?? 30;

  let scopes = new Set(options.scope);
  let tools = options.tools === undefined ? undefined : new Set(options.tools);
  let approvalId: string | undefined;
  let approved: Promise<string> | undefined;
  let token: MintedToken | undefined;
  let minting: Promise<MintedToken> | undefined;
  /** Set once the human revoked or denied: every later request fails with it. */
  let withdrawn: CountersignApprovalError | undefined;

  async function ask(request: ApprovalRequest): Promise<string> {
    const id = await sts.requestApproval(request);
    options.onApprovalRequested?.(id, request);
    await sts.waitForDecision(id);
    return id;
  }

  function fail(error: unknown): never {
    if (
      error instanceof CountersignApprovalError &&
      (error.code === "approval_revoked" || error.code === "approval_denied")
    ) {
      withdrawn ??= error;
    }
    throw error;
  }

  /** The approval of the current terms: asked for once, shared by concurrent requests. */
  function ensureApproved(): Promise<string> {
    if (withdrawn !== undefined) return Promise.reject(withdrawn);
    approved ??= ask({ scope: [...scopes], tools: tools === undefined ? undefined : [...tools] }).then(
      (id) => {
        approvalId = id;
        return id;
      },
      (error: unknown) => {
        approved = undefined;
        return fail(error);
      },
    );
    return approved;
  }

  async function taskToken(): Promise<MintedToken> {
    if (withdrawn !== undefined) throw withdrawn;
    if (token !== undefined && token.expiresAt > Date.now()) return token;
    minting ??= (async () => {
      try {
        const id = await ensureApproved();
        const minted = await sts.exchange(id, await options.subjectToken()).catch(fail);
        token = minted;
        return minted;
      } finally {
        minting = undefined;
      }
    })();
    return minting;
  }

  /** Sends with `bearer`, waiting out 429s (bounded); the response is buffered when it is a refusal. */
  async function send(
    url: string | URL,
    init: RequestInit | undefined,
    bearer: string,
  ): Promise<{ response: Response; body: Record<string, unknown> }> {
    for (let retries = 0; ; retries++) {
      const headers = new Headers(init?.headers);
      headers.set("authorization", `Bearer ${bearer}`);
      const response = await base(url, { ...init, headers });
      if (response.status < 400) return { response, body: {} };
      const read = await buffered(response);
      if (response.status === 429 && retries < maxRateLimitRetries) {
        const after = Number(response.headers.get("retry-after") ?? "1");
        const seconds = Number.isFinite(after) && after >= 0 ? after : 1;
        if (seconds <= maxRetryAfter) {
          await sleep(seconds * 1000);
          continue;
        }
      }
      return read;
    }
  }

  function checkWithdrawn(status: number, body: Record<string, unknown>): void {
    if (status === 401 && typeof body.reason === "string" && WITHDRAWN.has(body.reason)) {
      token = undefined;
      fail(new CountersignApprovalError(body.reason, "The approval was revoked", approvalId));
    }
  }

  /** A per-call tool: an approval of these exact arguments, one token, used for this request alone. */
  async function callOnce(
    url: string | URL,
    init: RequestInit | undefined,
    call: { tool: string; arguments: Record<string, unknown> },
  ): Promise<Response> {
    // A denied or revoked call approval concerns that call alone: the task's approval stands.
    if (withdrawn !== undefined) throw withdrawn;
    const id = await ask({ scope: [...scopes], call });
    const minted = await sts.exchange(id, await options.subjectToken());
    const { response, body } = await send(url, init, minted.accessToken);
    if (response.status === 401 && body.reason === "approval_revoked") {
      throw new CountersignApprovalError("approval_revoked", "The call's approval was revoked", id);
    }
    return response;
  }

  const mcpFetch: FetchLike = async (url, init) => {
    const target = new URL(typeof url === "string" ? url : url.href);
    if (`${target.origin}${target.pathname}` !== endpoint) return base(url, init);
    const call = init?.method === "POST" ? toolCallOf(init.body) : undefined;
    if (call !== undefined && perCall.has(call.tool)) return callOnce(url, init, call);
    for (let stepUps = 0, renewed = false; ; ) {
      const current = await taskToken();
      const { response, body } = await send(url, init, current.accessToken);
      if (response.status < 400) return response;
      checkWithdrawn(response.status, body);
      if (response.status === 401 && !renewed) {
        // Expired or too old for the gateway: exchange again under the same approval, once.
        renewed = true;
        token = undefined;
        continue;
      }
      if (response.status === 403 && stepUps < maxStepUps) {
        const challenge = challengeOf(response);
        let widened = false;
        if (challenge.error === "insufficient_scope" && challenge.scope !== undefined) {
          const next = new Set([...scopes, ...challenge.scope.split(" ").filter(Boolean)]);
          widened = next.size > scopes.size;
          scopes = next;
        } else if (body.reason === "tool_not_approved" && call !== undefined && tools !== undefined) {
          widened = !tools.has(call.tool);
          tools = new Set([...tools, call.tool]);
        }
        if (widened) {
          stepUps++;
          approved = undefined;
          token = undefined;
          continue;
        }
      }
      return response;
    }
  };

  const clientMetadata: OAuthClientMetadata = {
    redirect_uris: [],
    grant_types: ["urn:ietf:params:oauth:grant-type:token-exchange"],
    token_endpoint_auth_method: "client_secret_basic",
    client_name: options.clientId,
  };

  const provider: OAuthClientProvider = {
    get redirectUrl() {
      return undefined;
    },
    get clientMetadata() {
      return clientMetadata;
    },
    clientInformation: () => ({ client_id: options.clientId, client_secret: options.clientSecret }),
    tokens(): OAuthTokens | undefined {
      if (token === undefined || token.expiresAt <= Date.now()) return undefined;
      return {
        access_token: token.accessToken,
        token_type: "Bearer",
        expires_in: Math.floor((token.expiresAt - Date.now()) / 1000),
      };
    },
    saveTokens(tokens: OAuthTokens) {
      const lifetime = tokens.expires_in ?? 60;
      token = {
        accessToken: tokens.access_token,
        expiresAt: Date.now() + (lifetime - Math.min(30, lifetime / 10)) * 1000,
      };
    },
    redirectToAuthorization() {
      throw new Error("Countersign agents do not use interactive authorization");
    },
    saveCodeVerifier() {
      // No authorization code flow.
    },
    codeVerifier() {
      throw new Error("Countersign agents do not use interactive authorization");
    },
    async prepareTokenRequest(scope?: string) {
      if (scope !== undefined) {
        const next = new Set([...scopes, ...scope.split(" ").filter(Boolean)]);
        if (next.size > scopes.size) {
          scopes = next;
          approved = undefined;
        }
      }
      const id = await ensureApproved();
      return sts.exchangeParams(id, await options.subjectToken());
    },
  };

  return {
    fetch: mcpFetch,
    provider,
    get approvalId() {
      return approvalId;
    },
  };
}
