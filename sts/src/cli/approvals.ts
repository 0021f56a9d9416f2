import { type Command, InvalidArgumentError, Option } from "commander";
import type { ApprovalJson } from "../approvals/model.js";
import { ConfigError, loadConfig } from "../config/load.js";
import type { RateLimit } from "../config/schema.js";
import { safeText } from "../ops/safe_text.js";
import { type ApiClient, createApiClient, stsUrl } from "./api_client.js";
import { requestDevApproverToken } from "./dev_credentials.js";
import { action, CliError, EXIT, printJson, table, truncate } from "./output.js";

/** Options every `approvals` subcommand takes. */
interface ConnectionOptions {
  url?: string;
  token?: string;
  as: string;
  json?: boolean;
}

/** Options of `approvals list`. */
interface ListOptions extends ConnectionOptions {
  status: string;
  limit?: number;
  cursor?: string;
}

/** Options of `approvals approve`. */
interface ApproveOptions extends ConnectionOptions {
  scope?: string[];
  maxTokens?: number;
  ttl?: number;
  rate?: RateLimit;
}

/** Options of `approvals deny` and `revoke`. */
interface ReasonOptions extends ConnectionOptions {
  reason?: string;
}

function positiveInteger(name: string, max: number) {
  return (value: string): number => {
    const number = /^[0-9]{1,9}$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isInteger(number) || number < 1 || number > max) {
      throw new InvalidArgumentError(`${name} must be an integer from 1 to ${max}`);
    }
    return number;
  };
}

function parseRate(value: string): RateLimit {
  const match = /^([0-9]+(?:\.[0-9]+)?):([0-9]+)$/.exec(value);
  const perSecond = Number(match?.[1]);
  const burst = Number(match?.[2]);
  if (!match || !(perSecond > 0) || !Number.isInteger(burst) || burst < 1) {
    throw new InvalidArgumentError("must be PER_SECOND:BURST, e.g. 5:10");
  }
  return { per_second: perSecond, burst };
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

function withConnection(command: Command): Command {
  return command
    .addOption(
      new Option("--url <url>", "the STS base URL (default: http://HOST:PORT, where npm start listens)").env(
        "COUNTERSIGN_URL",
      ),
    )
    .addOption(
      new Option("--token <token>", "an approver token (a JWT from a trusted issuer)").env(
        "COUNTERSIGN_TOKEN",
      ),
    )
    .option(
      "--as <sub>",
      "dev mode without --token: get a development approver token for this sub from the STS",
      "operator",
    )
    .option("--json", "print JSON instead of text");
}

/**
 * The approver credential: `--token` / `COUNTERSIGN_TOKEN`, or in dev mode a development approver token
 * for `--as` from the STS at `url` itself (`POST /console/dev-token`): nothing is read from or created
 * in a local data directory, so this works from any directory given only the STS's address. Refused
 * when the local config (`COUNTERSIGN_CONFIG`) says `dev_mode: false`.
 */
async function approverToken(url: string, options: ConnectionOptions): Promise<string> {
  if (options.token) return options.token;
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(error.message, EXIT.config);
    throw error;
  }
  if (!config.dev_mode) {
    throw new CliError(
      `no approver token: pass --token or set COUNTERSIGN_TOKEN (dev_mode is false in ${config.source}, so no development token is minted)`,
    );
  }
  return requestDevApproverToken(url, options.as);
}

async function connect(options: ConnectionOptions): Promise<ApiClient> {
  const url = stsUrl(options.url);
  return createApiClient(url, await approverToken(url, options));
}

function tokens(approval: ApprovalJson): string {
  return `${approval.tokens_issued}/${approval.max_tokens}`;
}

/** Human-readable details of one approval, one `key: value` per line, each value {@link safeText}. */
export function describeApproval(approval: ApprovalJson): string {
  const rows: Array<[string, string]> = [
    ["id", approval.id],
    ["status", approval.status],
    ["client", approval.client_id],
    ["task", approval.task],
    ["resource", approval.resource],
    [
      "scope",
      approval.scope === approval.requested_scope
        ? approval.scope
        : `${approval.scope} (requested: ${approval.requested_scope})`,
    ],
    ["subject", approval.subject ?? "-"],
    ["tokens", `${approval.tokens_issued} of ${approval.max_tokens} issued`],
    [
      "rate limit",
      approval.rate_limit ? `${approval.rate_limit.per_second}/s, burst ${approval.rate_limit.burst}` : "-",
    ],
    ["created", approval.created_at],
    ["expires", approval.expires_at],
    ["decided", approval.decided_at ?? "-"],
    ["approved by", approval.approved_by ?? "-"],
  ];
  if (approval.decision_reason) rows.push(["reason", approval.decision_reason]);
  if (approval.revoked_at) rows.push(["revoked", approval.revoked_at]);
  return `${rows.map(([key, value]) => `${`${key}:`.padEnd(13)}${safeText(value)}`).join("\n")}\n`;
}

/** One line saying what a decision did (the approval's strings {@link safeText}). */
function decided(verb: string, approval: ApprovalJson): string {
  const id = safeText(approval.id);
  if (verb === "approved") {
    return `approved ${id} for ${safeText(approval.client_id)}: scope "${safeText(approval.scope)}", ${approval.max_tokens} tokens, expires ${safeText(approval.expires_at)}\n`;
  }
  return `${verb} ${id}${approval.decision_reason ? `: ${safeText(approval.decision_reason)}` : ""}\n`;
}

function checkId(id: string): string {
  if (!/^apr_[A-Za-z0-9_-]{22}$/.test(id))
    throw new CliError(`no approval ${id} (not an approval id: apr_…)`);
  return id;
}

/**
 * `countersign approvals list|show|approve|deny|revoke`: the approval API (docs/reference.md#the-approval-api-routes) from the
 * command line, against a running STS.
 */
export function registerApprovalCommands(program: Command): void {
  const approvals = program
    .command("approvals")
    .description("list, show and decide approvals on a running STS (--url, approver --token)");

  withConnection(
    approvals.command("list").description("list approvals (pending: each agent's newest first, in turn)"),
  )
    .addOption(
      new Option("--status <status>", "which approvals")
        .choices(["pending", "approved", "denied", "revoked", "expired"])
        .default("pending"),
    )
    .option("--limit <n>", "at most this many (1 to 200)", positiveInteger("--limit", 200))
    .option("--cursor <cursor>", "continue after a previous page (its next_cursor)")
    .action(
      action(async (options: ListOptions) => {
        const client = await connect(options);
        const query = new URLSearchParams({ status: options.status });
        if (options.limit !== undefined) query.set("limit", String(options.limit));
        if (options.cursor !== undefined) query.set("cursor", options.cursor);
        const page = await client.request<{ approvals: ApprovalJson[]; next_cursor: string | null }>(
          "GET",
          `/approvals?${query}`,
        );
        if (options.json) return printJson(page);
        if (page.approvals.length === 0) {
          process.stdout.write(`no ${options.status} approvals\n`);
          return;
        }
        process.stdout.write(
          table(
            ["ID", "STATUS", "CLIENT", "RESOURCE", "SCOPE", "TOKENS", "EXPIRES", "TASK"],
            page.approvals.map((a) => [
              a.id,
              a.status,
              a.client_id,
              a.resource,
              a.scope,
              tokens(a),
              a.expires_at,
              truncate(a.task, 48),
            ]),
          ),
        );
        if (page.next_cursor) process.stdout.write(`more: --cursor ${safeText(page.next_cursor)}\n`);
      }),
    );

  withConnection(approvals.command("show").description("show one approval").argument("<id>", "apr_…")).action(
    action(async (id: string, options: ConnectionOptions) => {
      checkId(id);
      const client = await connect(options);
      const approval = await client.request<ApprovalJson>("GET", `/approvals/${id}`, { subject: id });
      if (options.json) return printJson(approval);
      process.stdout.write(describeApproval(approval));
    }),
  );

  withConnection(
    approvals
      .command("approve")
      .description("approve a pending approval, optionally narrowing it")
      .argument("<id>", "apr_…"),
  )
    .option("--scope <scope>", "approve only these scopes (space-separated; repeatable)", collect)
    .option("--max-tokens <n>", "approve at most n tokens", positiveInteger("--max-tokens", 1_000_000))
    .option(
      "--ttl <seconds>",
      "lifetime from the approval's creation, in seconds",
      positiveInteger("--ttl", 2_592_000),
    )
    .option("--rate <per_second:burst>", "rate and burst limit of its tokens", parseRate)
    .action(
      action(async (id: string, options: ApproveOptions) => {
        checkId(id);
        const client = await connect(options);
        const body = {
          ...(options.scope ? { scope: options.scope.join(" ") } : {}),
          ...(options.maxTokens !== undefined ? { max_tokens: options.maxTokens } : {}),
          ...(options.ttl !== undefined ? { ttl_seconds: options.ttl } : {}),
          ...(options.rate ? { rate_limit: options.rate } : {}),
        };
        const approval = await client.request<ApprovalJson>("POST", `/approvals/${id}/approve`, {
          body,
          subject: id,
          action: "approve",
        });
        if (options.json) return printJson(approval);
        process.stdout.write(decided("approved", approval));
      }),
    );

  for (const [verb, past, what] of [
    ["deny", "denied", "deny a pending approval"],
    ["revoke", "revoked", "revoke an approved approval (every gateway learns it)"],
  ] as const) {
    withConnection(approvals.command(verb).description(what).argument("<id>", "apr_…"))
      .option("--reason <text>", "why (kept in the audit log, shown to the agent)")
      .action(
        action(async (id: string, options: ReasonOptions) => {
          checkId(id);
          const client = await connect(options);
          const approval = await client.request<ApprovalJson>("POST", `/approvals/${id}/${verb}`, {
            body: options.reason === undefined ? {} : { reason: options.reason },
            subject: id,
            action: verb,
          });
          if (options.json) return printJson(approval);
          process.stdout.write(decided(past, approval));
        }),
      );
  }
}
