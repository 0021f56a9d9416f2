import type { Kysely } from "kysely";
import { newApprovalId } from "../../sts/src/approvals/model.js";
import type { ApprovalStatus, Database } from "../../sts/src/db/schema.js";
import { basicAuth, postForm, TEST_SECRET } from "./app.js";

export const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
export const JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt";

/** Inserts an approval row directly (exchange tests do not depend on the approval API). */
export async function insertApproval(
  db: Kysely<Database>,
  values: {
    status?: ApprovalStatus;
    client_id?: string;
    resource?: string;
    scope?: string;
    subject?: string | null;
    subject_issuer?: string | null;
    max_tokens?: number;
    tokens_issued?: number;
    ttl_seconds?: number;
    rate_limit?: { per_second: number; burst: number } | null;
    task?: string;
    tools?: string[] | null;
    resources?: string[] | null;
    prompts?: string[] | null;
  } = {},
): Promise<string> {
  const id = newApprovalId();
  const clientId = values.client_id ?? "billing-agent";
  const scope = values.scope ?? "crm:read crm:write";
  const status = values.status ?? "approved";
  await db
    .insertInto("approvals")
    .values({
      id,
      status,
      client_id: clientId,
      resource: values.resource ?? "https://crm.example.test",
      scope,
      requested_scope: scope,
      task: values.task ?? "reconcile the March invoices",
      subject: values.subject === undefined ? "alice" : values.subject,
      subject_issuer: values.subject_issuer ?? null,
      max_tokens: values.max_tokens ?? 10,
      tokens_issued: values.tokens_issued ?? 0,
      rate_limit: values.rate_limit ? JSON.stringify(values.rate_limit) : null,
      requested_by: clientId,
      approved_by: status === "pending" ? null : "bob",
      decided_by: status === "pending" ? null : "bob",
      decision_reason: null,
      decided_at: status === "pending" ? null : new Date(),
      expires_at: new Date(Date.now() + (values.ttl_seconds ?? 3600) * 1000),
      revoked_at: status === "revoked" ? new Date() : null,
      // Only when given: a test may insert into a database migrated to before these columns.
      ...(values.tools ? { tools: JSON.stringify(values.tools) } : {}),
      ...(values.resources ? { resources: JSON.stringify(values.resources) } : {}),
      ...(values.prompts ? { prompts: JSON.stringify(values.prompts) } : {}),
    })
    .execute();
  return id;
}

/** The `authorization_details` parameter naming an approval. */
export function agentTask(approvalId: string): string {
  return JSON.stringify([{ type: "agent_task", approval_id: approvalId }]);
}

/** POSTs a token exchange for `billing-agent` (client_secret_basic) with sensible defaults. */
export function exchange(
  url: string,
  params: Record<string, string>,
  client: { id: string; secret: string } = { id: "billing-agent", secret: TEST_SECRET },
  headers: Record<string, string> = {},
) {
  return postForm(
    `${url}/token`,
    {
      grant_type: TOKEN_EXCHANGE,
      subject_token_type: JWT_TOKEN_TYPE,
      resource: "https://crm.example.test",
      ...params,
    },
    { authorization: basicAuth(client.id, client.secret), ...headers },
  );
}
