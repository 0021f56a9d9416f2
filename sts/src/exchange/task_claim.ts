/**
 * Largest size of a minted access token, in bytes: the gateway verifier's default `maxTokenBytes`.
 * A token that would be larger is refused before the approval's budget is taken, so a gateway never
 * sees a token it refuses by size after a budget unit was spent on it.
 */
export const MAX_ACCESS_TOKEN_BYTES = 8192;

/**
 * Most bytes of the approval's task carried in a token's `agent_task` authorization details, measured
 * as JSON-encoded UTF-8 (what the token actually holds). The full text stays in the approval.
 */
export const MAX_TOKEN_TASK_BYTES = 512;

/** The task text a token carries, and whether it was shortened. */
export interface TaskClaim {
  readonly task: string;
  readonly truncated: boolean;
}

/**
 * Bounds the task text for a token: whole code points while their JSON-encoded UTF-8 size fits
 * `maxBytes` (escaped control characters count as the six bytes they take). The approval keeps the
 * whole text; `truncated` says the token's copy is shorter.
 */
export function taskClaim(task: string, maxBytes = MAX_TOKEN_TASK_BYTES): TaskClaim {
  let size = 0;
  let end = 0;
  for (const codePoint of task) {
    const bytes = Buffer.byteLength(JSON.stringify(codePoint)) - 2;
    if (size + bytes > maxBytes) return { task: task.slice(0, end), truncated: true };
    size += bytes;
    end += codePoint.length;
  }
  return { task, truncated: false };
}
