import { basicAuth, TEST_SECRET } from "../helpers/app.js";
import { agentTask, JWT_TOKEN_TYPE, TOKEN_EXCHANGE } from "../helpers/exchange.js";

/** One answer of the token endpoint under load (`status` 0: the connection failed). */
export interface LoadAnswer {
  status: number;
  error: string | undefined;
  jti: string | undefined;
  approvalId: string;
  phase: string;
}

/** Decodes the `jti` of an access token without verifying it. */
function jtiOf(token: string): string | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { jti?: unknown };
  return typeof claims.jti === "string" ? claims.jti : undefined;
}

/** One token exchange for billing-agent; never throws (a failed connection is status 0). */
export async function exchangeOnce(
  url: string,
  subjectToken: string,
  approvalId: string,
  phase: string,
): Promise<LoadAnswer> {
  try {
    const response = await fetch(`${url}/token`, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: basicAuth("billing-agent", TEST_SECRET),
      },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        subject_token: subjectToken,
        subject_token_type: JWT_TOKEN_TYPE,
        resource: "https://crm.example.test",
        authorization_details: agentTask(approvalId),
      }).toString(),
      signal: AbortSignal.timeout(30_000),
    });
    const body = (await response.json()) as { access_token?: string; error?: string };
    return {
      status: response.status,
      error: body.error,
      jti: body.access_token ? jtiOf(body.access_token) : undefined,
      approvalId,
      phase,
    };
  } catch {
    return { status: 0, error: "connection_failed", jti: undefined, approvalId, phase };
  }
}

/**
 * Runs `workers` loops of exchanges until `stop()` is called (or `maxRequests` is reached), rotating
 * over `approvalIds`; the current phase label is read from `phase()` at each request.
 */
export function startLoad(options: {
  url: () => string;
  subjectToken: string;
  approvalIds: readonly string[];
  workers: number;
  phase: () => string;
  maxRequests: number;
}): { answers: LoadAnswer[]; stop(): Promise<LoadAnswer[]> } {
  const answers: LoadAnswer[] = [];
  let running = true;
  let sent = 0;
  const loops = Array.from({ length: options.workers }, async (_, worker) => {
    let i = worker;
    while (running && sent < options.maxRequests) {
      sent += 1;
      const approvalId = options.approvalIds[i % options.approvalIds.length] as string;
      i += 1;
      answers.push(await exchangeOnce(options.url(), options.subjectToken, approvalId, options.phase()));
    }
  });
  return {
    answers,
    async stop() {
      running = false;
      await Promise.all(loops);
      return answers;
    },
  };
}

/** Counts answers by `phase status error`. */
export function tally(answers: readonly LoadAnswer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of answers) {
    const key = `${a.phase} ${a.status} ${a.error ?? ""}`.trim();
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Waits until `condition()` holds, polling every `intervalMs`, at most `attempts` times. */
export async function eventually(
  condition: () => boolean | Promise<boolean>,
  attempts: number,
  intervalMs: number,
): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    if (await condition()) return true;
    await sleep(intervalMs);
  }
  return false;
}
