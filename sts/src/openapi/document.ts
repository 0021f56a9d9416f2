import { z } from "zod";
import {
  approvalListSchema,
  approvalSchema,
  approveBody,
  createApprovalBody,
  DEFAULT_LIST_LIMIT,
  decisionBody,
  errorSchema,
  listQuery,
  MAX_LIST_LIMIT,
} from "../approvals/schemas.js";
import {
  cursorResetSchema,
  feedRateLimitedSchema,
  revocationEntrySchema,
  revocationPageSchema,
  streamsFullSchema,
  tooManyStreamsSchema,
} from "../revocations/wire.js";
import { tokenRequestForm, tokenResponse } from "./token_form.js";

/** A JSON value (the document is plain JSON). */
type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** Options of {@link buildOpenApiDocument}. */
export interface OpenApiOptions {
  /** The STS issuer: the document's server URL. */
  readonly issuer: string;
  /** The document's `info.version`. Default `0.1.0`. */
  readonly version?: string;
}

/** A zod schema as an OpenAPI 3.1 Schema Object (JSON Schema 2020-12), without `$schema`. */
function jsonSchema(schema: z.ZodType, io: "input" | "output"): JsonObject {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, {
    io,
    target: "draft-2020-12",
    unrepresentable: "any",
  }) as JsonObject;
  return rest;
}

const ref = (name: string): JsonObject => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: JsonObject): JsonObject => ({ "application/json": { schema } });

const ERROR_TEXT: Record<number, string> = {
  400: "Bad input (`invalid_request`, `invalid_target`, `invalid_scope`); names the field",
  401: "No or bad credentials (`invalid_token`), with `WWW-Authenticate`",
  403: "Not allowed (`insufficient_scope`, `access_denied`)",
  404: "No such approval (`not_found`); also another agent's approval",
  409: "State conflict (`invalid_state`), e.g. approving a denied approval",
  413: "The body exceeds 64 KiB",
  415: "The body is not application/json in UTF-8",
  429: "Too many requests (`slow_down`), with `Retry-After`: per agent, new approval requests or pending approvals (`too_many_pending`, `POST /approvals`); per DPoP-bound caller, proofs past its share of the proof replay cache",
  503: "The database is unavailable, or the DPoP proof replay cache is full (`temporarily_unavailable`), with `Retry-After`",
};

function errors(...statuses: number[]): Record<string, JsonObject> {
  const out: Record<string, JsonObject> = {};
  for (const status of statuses) {
    const response: JsonObject = { description: ERROR_TEXT[status] ?? "Error", content: json(ref("Error")) };
    if (status === 401) {
      response.headers = {
        "WWW-Authenticate": { description: "RFC 6750 §3 challenge", schema: { type: "string" } },
      };
    }
    if (status === 429) {
      response.headers = {
        "Retry-After": { description: "Seconds to wait (RFC 9110 §10.2.3)", schema: { type: "integer" } },
      };
    }
    out[String(status)] = response;
  }
  return out;
}

const idParameter: JsonObject = {
  name: "id",
  in: "path",
  required: true,
  description: "The approval id (`apr_…`).",
  schema: { type: "string", pattern: "^apr_[A-Za-z0-9_-]{22}$" },
};

const retryAfter: JsonObject = {
  "Retry-After": { description: "Seconds to wait (RFC 9110 §10.2.3)", schema: { type: "integer" } },
};

const afterParameter = (description: string): JsonObject => ({
  name: "after",
  in: "query",
  required: false,
  description,
  schema: { type: "string", maxLength: 40 },
});

const cursorResetResponse: JsonObject = {
  description:
    "`cursor_reset`: the cursor lies outside the feed (another epoch after a restore, below the low-water mark, ahead of the head); `cursor` says where to restart",
  content: json(ref("CursorReset")),
};

/** `GET /revocations` and `GET /revocations/stream` (docs/reference.md#the-revocation-feed): anonymous. */
function revocationPaths(): JsonObject {
  return {
    "/revocations": {
      get: {
        operationId: "readRevocations",
        tags: ["revocations"],
        summary: "Read the revocation feed (anyone: it lists approval ids only)",
        description:
          "Revoked and expired approvals whose tokens may still be alive, oldest first, paged. Reads per " +
          "client address are bounded (`revocations.max_feed_reads_per_address_per_minute`, per 60-second " +
          "window): beyond it 429 `slow_down` (reason `feed_rate_limited`) with `Retry-After`.",
        security: [{}],
        parameters: [
          afterParameter("A cursor from this feed: entries after it. Without it: from the low-water mark."),
          {
            name: "limit",
            in: "query",
            required: false,
            description: "Page size.",
            schema: { type: "integer", minimum: 1, maximum: 500, default: 500 },
          },
        ],
        responses: {
          "200": { description: "A page of the feed", content: json(ref("RevocationPage")) },
          "400": {
            description: "A malformed or repeated `after` or `limit` (`invalid_request`)",
            content: json(ref("Error")),
          },
          "410": cursorResetResponse,
          "429": {
            description: "Too many reads from this client address (`slow_down`, reason `feed_rate_limited`)",
            headers: retryAfter,
            content: json(ref("FeedRateLimited")),
          },
          ...errors(503),
        },
      },
    },
    "/revocations/stream": {
      get: {
        operationId: "streamRevocations",
        tags: ["revocations"],
        summary: "The revocation feed as server-sent events (anyone)",
        description:
          "Each event is `id: <cursor>` and `data: <RevocationEntry JSON>`. Resuming (`Last-Event-ID` or " +
          "`after`) replays at most `revocations.max_replay_entries` entries. Slots per instance " +
          "(`max_stream_subscribers`: 503, reason `stream_subscribers_reached`) and per client address " +
          "(`max_streams_per_address`: 429 `too_many_streams`, reason `streams_per_address_reached`) are " +
          "bounded, and so are replays per address and minute (`max_replays_per_address_per_minute`: 429 " +
          "`too_many_streams`, reason `replay_rate_limited`): resuming with a backlog, or with a cursor " +
          "ahead of the instance's head or of another epoch (the instance re-reads the feed), costs one.",
        security: [{}],
        parameters: [
          afterParameter("Resume after this cursor (`Last-Event-ID` takes precedence)."),
          {
            name: "Last-Event-ID",
            in: "header",
            required: false,
            description: "The last event's id: resume after it.",
            schema: { type: "string", maxLength: 40 },
          },
        ],
        responses: {
          "200": {
            description: "An event stream of revocation entries (each `data` is a `RevocationEntry`)",
            content: { "text/event-stream": { schema: { type: "string" } } },
          },
          "400": {
            description:
              "A malformed or repeated `after`, or a malformed `Last-Event-ID` (`invalid_request`)",
            content: json(ref("Error")),
          },
          "410": {
            ...cursorResetResponse,
            description: `${cursorResetResponse.description as string}; also \`cursor_beyond_replay\`: read \`GET /revocations\` from \`cursor\`, then resume`,
          },
          "429": {
            description:
              "`too_many_streams`: this client address holds `max_streams_per_address` streams (reason `streams_per_address_reached`), or has used its replays (reason `replay_rate_limited`)",
            headers: retryAfter,
            content: json(ref("TooManyStreams")),
          },
          "503": {
            description:
              "`temporarily_unavailable`: the instance holds `max_stream_subscribers` streams (reason `stream_subscribers_reached`)",
            headers: retryAfter,
            content: json(ref("StreamsFull")),
          },
        },
      },
    },
  };
}

const agent: Json[] = [{ agentBearer: [] }];
const approver: Json[] = [{ approverBearer: [] }];

function decision(
  action: "approve" | "deny" | "revoke",
  summary: string,
  description: string,
  body: string,
): JsonObject {
  return {
    post: {
      operationId: `${action}Approval`,
      tags: ["approvals"],
      summary,
      description,
      security: approver,
      parameters: [idParameter],
      requestBody: { required: false, content: json(ref(body)) },
      responses: {
        "200": { description: "The approval after the decision", content: json(ref("Approval")) },
        ...errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
      },
    },
  };
}

/**
 * The OpenAPI 3.1 document of the approval API (docs/reference.md#the-approval-api-routes), the token endpoint
 * (docs/reference.md#token-exchange) and the revocation feed (docs/reference.md#the-revocation-feed), generated
 * from the zod schemas the routes validate with (zod's `z.toJSONSchema`, JSON Schema 2020-12, which is
 * OpenAPI 3.1's dialect). Request bodies are described as the routes accept them (`io: "input"`: fields
 * with defaults are optional).
 */
export function buildOpenApiDocument(options: OpenApiOptions): JsonObject {
  const listQuerySchema = jsonSchema(listQuery, "input");
  const statusSchema = (listQuerySchema.properties as JsonObject).status as JsonObject;
  return {
    openapi: "3.1.0",
    info: {
      title: "Countersign approval API",
      version: options.version ?? "0.1.0",
      summary: "Human approvals for AI agents' tasks, and the RFC 8693 token exchange that spends them.",
      description:
        "Agents ask for an approval (`POST /approvals`) with a bearer token from `client_credentials` " +
        "(`scope=approvals:request`); humans approve (possibly narrowing), deny or revoke it with a bearer " +
        "JWT from a trusted issuer whose usage includes `approver`. Unknown JSON fields are rejected with 400. " +
        "Every error is `{error, error_description}`.",
      license: { name: "Apache-2.0", url: "https://www.apache.org/licenses/LICENSE-2.0" },
    },
    jsonSchemaDialect: "https://spec.openapis.org/oas/3.1/dialect/base",
    servers: [{ url: options.issuer }],
    tags: [
      { name: "approvals", description: "Approval requests and decisions" },
      { name: "oauth", description: "The token endpoint" },
      { name: "revocations", description: "The revocation feed gateways read (no credentials)" },
    ],
    paths: {
      "/approvals": {
        post: {
          operationId: "requestApproval",
          tags: ["approvals"],
          summary: "Ask for an approval (agent)",
          description:
            "`resource` must be a configured resource and every scope one of its scopes, else 400 " +
            "`invalid_target` / `invalid_scope`. Per agent, the rate of requests " +
            "(`approvals.request_rate_limit`: 429 `slow_down`) and the number of pending approvals " +
            "(`approvals.max_pending_per_agent`: 429 `too_many_pending`) are capped; both answers carry " +
            "`Retry-After`.",
          security: agent,
          requestBody: { required: true, content: json(ref("ApprovalRequest")) },
          responses: {
            "201": {
              description: "A pending approval",
              headers: {
                Location: { description: "`/approvals/{id}`", schema: { type: "string" } },
              },
              content: json(ref("Approval")),
            },
            ...errors(400, 401, 403, 413, 415, 429, 503),
          },
        },
        get: {
          operationId: "listApprovals",
          tags: ["approvals"],
          summary: "List approvals by status (approver)",
          description:
            "Pending approvals round by round: each agent's newest, then each agent's second newest, and so " +
            "on, newest first within a round, so no agent's requests push another's off the first page. " +
            "A first page reads about a page of approvals when many agents are waiting (at most `limit` × " +
            "`approvals.max_pending_per_agent` when few are), however many are pending or were ever made. " +
            "Other statuses oldest first. Paged by `cursor`; a pending list's cursor keeps the first page's " +
            "order and is good for an hour. Unknown query parameters are rejected with 400.",
          security: approver,
          parameters: [
            { name: "status", in: "query", required: false, schema: statusSchema },
            {
              name: "limit",
              in: "query",
              required: false,
              description: "Page size.",
              schema: { type: "integer", minimum: 1, maximum: MAX_LIST_LIMIT, default: DEFAULT_LIST_LIMIT },
            },
            {
              name: "cursor",
              in: "query",
              required: false,
              description: "`next_cursor` of the previous page.",
              schema: (listQuerySchema.properties as JsonObject).cursor as JsonObject,
            },
          ],
          responses: {
            "200": { description: "A page of approvals", content: json(ref("ApprovalList")) },
            ...errors(400, 401, 403, 429, 503),
          },
        },
      },
      "/approvals/{id}": {
        get: {
          operationId: "getApproval",
          tags: ["approvals"],
          summary: "Read an approval (the agent that asked, or an approver)",
          security: [...agent, ...approver],
          parameters: [idParameter],
          responses: {
            "200": { description: "The approval", content: json(ref("Approval")) },
            ...errors(401, 403, 404, 429, 503),
          },
        },
      },
      "/approvals/{id}/approve": decision(
        "approve",
        "Approve a pending approval (approver)",
        "Each field may only narrow what was asked; 400 `invalid_request` otherwise. 409 unless pending.",
        "ApproveRequest",
      ),
      "/approvals/{id}/deny": decision(
        "deny",
        "Deny a pending approval (approver)",
        "409 unless pending.",
        "DecisionRequest",
      ),
      "/approvals/{id}/revoke": decision(
        "revoke",
        "Revoke an approved approval (approver)",
        "409 unless approved. Every gateway learns it through the revocation feed (`GET /revocations`).",
        "DecisionRequest",
      ),
      "/token": {
        post: {
          operationId: "token",
          tags: ["oauth"],
          summary: "OAuth token endpoint: token exchange (RFC 8693), client_credentials, jwt-bearer (ID-JAG)",
          description:
            "Client authentication: `client_secret_basic`, `client_secret_post` or `private_key_jwt`. " +
            "Refusals are RFC 6749 §5.2 errors: `invalid_grant` (no, another client's, denied, revoked, " +
            "expired or used-up approval; subject mismatch; policy; an unacceptable or replayed ID-JAG), " +
            "`authorization_pending`, `access_denied`, " +
            "`invalid_target`, `invalid_scope`, 429 `slow_down` with `Retry-After`, 503.",
          security: [{ clientSecretBasic: [] }, {}],
          requestBody: {
            required: true,
            content: { "application/x-www-form-urlencoded": { schema: ref("TokenRequest") } },
          },
          responses: {
            "200": { description: "An access token", content: json(ref("TokenResponse")) },
            "400": { description: "An RFC 6749 §5.2 error", content: json(ref("Error")) },
            "401": {
              description: "Client authentication failed (`invalid_client`)",
              content: json(ref("Error")),
            },
            "429": {
              description: "Issuance rate limit (`slow_down`)",
              headers: { "Retry-After": { schema: { type: "integer" } } },
              content: json(ref("Error")),
            },
            ...errors(503),
          },
        },
      },
      ...revocationPaths(),
    },
    components: {
      schemas: {
        Approval: jsonSchema(approvalSchema, "output"),
        ApprovalList: jsonSchema(approvalListSchema, "output"),
        ApprovalRequest: jsonSchema(createApprovalBody, "input"),
        ApproveRequest: jsonSchema(approveBody, "input"),
        DecisionRequest: jsonSchema(decisionBody, "input"),
        CursorReset: jsonSchema(cursorResetSchema, "output"),
        Error: jsonSchema(errorSchema, "output"),
        FeedRateLimited: jsonSchema(feedRateLimitedSchema, "output"),
        RevocationEntry: jsonSchema(revocationEntrySchema, "output"),
        RevocationPage: jsonSchema(revocationPageSchema, "output"),
        StreamsFull: jsonSchema(streamsFullSchema, "output"),
        TokenRequest: jsonSchema(tokenRequestForm, "input"),
        TokenResponse: jsonSchema(tokenResponse, "output"),
        TooManyStreams: jsonSchema(tooManyStreamsSchema, "output"),
      },
      securitySchemes: {
        agentBearer: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description:
            "An access token from this STS's `client_credentials` grant with `scope=approvals:request` " +
            "(audience `<issuer>/approvals`).",
        },
        approverBearer: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description:
            "A JWT from a trusted issuer whose `usage` includes `approver` (and whose `approver_claim` matches); " +
            "in dev mode, `npx countersign dev-token --sub alice --usage approver`.",
        },
        clientSecretBasic: {
          type: "http",
          scheme: "basic",
          description: "client_secret_basic (RFC 6749 §2.3.1)",
        },
      },
    },
  };
}
