import { readFileSync } from "node:fs";
import {
  type CedarProblem,
  checkSchema,
  policyAnnotations,
  splitPolicies,
  validatePolicies,
} from "./cedar_wasm.js";
import { DEFAULT_DENY_ID, POLICY_ERROR_ID, SCHEMA_FILE } from "./schema.js";

/** What a policy id (`@id("…")`) may look like: it is echoed in `error_description`s and logs. */
export const POLICY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** Longest policy file read, in bytes. */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024;

/** A problem in a policy file, with its place when Cedar gave one (1-based line and column). */
export interface PolicyIssue {
  readonly file: string;
  readonly line: number | undefined;
  readonly column: number | undefined;
  readonly message: string;
}

/** `file:line:column: message` (or `file: message` without a place). */
export function formatIssue(issue: PolicyIssue): string {
  const place = issue.line === undefined ? "" : `:${issue.line}:${issue.column ?? 1}`;
  return `${issue.file}${place}: ${issue.message}`;
}

/** Thrown when policy files do not load; `issues` lists every problem with its place. */
export class PolicyLoadError extends Error {
  static readonly code = "ERR_POLICY_INVALID";
  readonly code = PolicyLoadError.code;
  constructor(readonly issues: readonly PolicyIssue[]) {
    super(`invalid Cedar policies:\n${issues.map((issue) => `  ${formatIssue(issue)}`).join("\n")}`);
    this.name = "PolicyLoadError";
  }
}

/** One loaded policy, with where it came from. */
export interface LoadedPolicy {
  /** Its `@id` annotation: the name refusals carry. */
  readonly id: string;
  /** Its `@reason` annotation, when given: the text refusals carry. */
  readonly reason: string | undefined;
  /** The policy's Cedar text (a slice of its file). */
  readonly text: string;
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

/** Policies that parsed and validated against the schema, keyed by their `@id`. */
export interface PolicySet {
  readonly schemaFile: string;
  readonly schemaText: string;
  readonly files: readonly string[];
  readonly policies: ReadonlyMap<string, LoadedPolicy>;
}

/** 1-based line and column (in characters) of a UTF-8 byte offset into `text`. */
export function locate(text: string, byteOffset: number): { line: number; column: number } {
  const prefix = Buffer.from(text, "utf8").subarray(0, Math.max(0, byteOffset)).toString("utf8");
  const lines = prefix.split("\n");
  return { line: lines.length, column: (lines.at(-1)?.length ?? 0) + 1 };
}

function describe(problem: CedarProblem): string {
  return problem.help ? `${problem.message} (${problem.help})` : problem.message;
}

/** Issues for Cedar problems whose spans are byte offsets into `text` shifted by `baseBytes`. */
function issuesAt(
  file: string,
  text: string,
  problems: readonly CedarProblem[],
  baseBytes = 0,
  prefix = "",
): PolicyIssue[] {
  return problems.map((problem) => {
    const span = problem.spans[0];
    const place = span ? locate(text, baseBytes + span.start) : undefined;
    return { file, line: place?.line, column: place?.column, message: `${prefix}${describe(problem)}` };
  });
}

function readPolicyFile(file: string): { text: string } | { issue: PolicyIssue } {
  try {
    const buffer = readFileSync(file);
    if (buffer.byteLength > MAX_POLICY_FILE_BYTES) {
      return {
        issue: {
          file,
          line: undefined,
          column: undefined,
          message: `larger than ${MAX_POLICY_FILE_BYTES} bytes`,
        },
      };
    }
    return { text: buffer.toString("utf8") };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message =
      code === "ENOENT" ? "no such file" : `cannot be read (${code ?? (error as Error).message})`;
    return { issue: { file, line: undefined, column: undefined, message } };
  }
}

/** Options for {@link checkPolicyFiles}. */
export interface CheckPolicyOptions {
  /** The schema to validate against. Default: the shipped {@link SCHEMA_FILE}. */
  readonly schemaFile?: string;
}

/**
 * Parses policy files and validates them, together, against the schema. Every policy must carry a
 * unique `@id("…")` (matching {@link POLICY_ID_PATTERN}); templates are not supported.
 * @returns the policy set, or every issue found (never both).
 */
export function checkPolicyFiles(
  files: readonly string[],
  options: CheckPolicyOptions = {},
): { ok: true; policySet: PolicySet } | { ok: false; issues: PolicyIssue[] } {
  const schemaFile = options.schemaFile ?? SCHEMA_FILE;
  const schemaRead = readPolicyFile(schemaFile);
  if ("issue" in schemaRead) return { ok: false, issues: [schemaRead.issue] };
  const schemaText = schemaRead.text;
  const schemaCheck = checkSchema(schemaText);
  if (!schemaCheck.ok) return { ok: false, issues: issuesAt(schemaFile, schemaText, schemaCheck.problems) };

  const issues: PolicyIssue[] = [];
  const policies = new Map<string, LoadedPolicy>();
  /** Byte offset of each policy inside its file, to place validation errors. */
  const offsets = new Map<string, { fileText: string; baseBytes: number }>();

  for (const file of files) {
    const read = readPolicyFile(file);
    if ("issue" in read) {
      issues.push(read.issue);
      continue;
    }
    const text = read.text;
    const split = splitPolicies(text);
    if (!split.ok) {
      issues.push(...issuesAt(file, text, split.problems, 0, "syntax error: "));
      continue;
    }
    for (const template of split.templates) {
      const at = locate(text, Buffer.byteLength(text.slice(0, Math.max(0, text.indexOf(template)))));
      issues.push({
        file,
        ...at,
        message: "templates (policies with ?principal or ?resource slots) are not supported",
      });
    }
    let searchFrom = 0;
    for (const policyText of split.policies) {
      // Cedar returns exact slices of the file; find each one (in file order when it can).
      let charStart = text.indexOf(policyText, searchFrom);
      if (charStart < 0) charStart = Math.max(0, text.indexOf(policyText));
      else searchFrom = charStart + policyText.length;
      const baseBytes = Buffer.byteLength(text.slice(0, charStart));
      const place = locate(text, baseBytes);
      const annotations = policyAnnotations(policyText);
      if (!annotations.ok) {
        issues.push(...issuesAt(file, text, annotations.problems, baseBytes));
        continue;
      }
      const id = annotations.annotations.id;
      if (id === undefined) {
        issues.push({
          file,
          ...place,
          message: 'policy has no @id("…") annotation; every policy needs a unique id',
        });
        continue;
      }
      if (!POLICY_ID_PATTERN.test(id)) {
        issues.push({
          file,
          ...place,
          message: `@id ${JSON.stringify(id)} must be 1 to 128 of A-Z a-z 0-9 _ . : - (starting with a letter or digit)`,
        });
        continue;
      }
      if (id === POLICY_ERROR_ID || id === DEFAULT_DENY_ID) {
        issues.push({ file, ...place, message: `@id ${JSON.stringify(id)} is reserved` });
        continue;
      }
      const existing = policies.get(id);
      if (existing) {
        issues.push({
          file,
          ...place,
          message: `@id ${JSON.stringify(id)} is already used at ${existing.file}:${existing.line}:${existing.column}`,
        });
        continue;
      }
      policies.set(id, { id, reason: annotations.annotations.reason, text: policyText, file, ...place });
      offsets.set(id, { fileText: text, baseBytes });
    }
  }
  if (issues.length === 0 && policies.size === 0) {
    issues.push({
      file: files.join(", ") || "(no files)",
      line: undefined,
      column: undefined,
      message: "no policies: every exchange and approval would be refused",
    });
  }
  if (issues.length > 0) return { ok: false, issues };

  const record = Object.fromEntries([...policies].map(([id, policy]) => [id, policy.text]));
  const validated = validatePolicies(schemaText, record);
  if (!validated.ok) {
    return {
      ok: false,
      issues: validated.problems.map((problem) => {
        const policy = problem.policyId === undefined ? undefined : policies.get(problem.policyId);
        const offset = problem.policyId === undefined ? undefined : offsets.get(problem.policyId);
        if (!policy || !offset) {
          return { file: files.join(", "), line: undefined, column: undefined, message: describe(problem) };
        }
        const [issue] = issuesAt(policy.file, offset.fileText, [problem], offset.baseBytes);
        return issue?.line === undefined
          ? { file: policy.file, line: policy.line, column: policy.column, message: describe(problem) }
          : issue;
      }),
    };
  }
  return { ok: true, policySet: { schemaFile, schemaText, files: [...files], policies } };
}

/**
 * Loads the policy files for the STS: parsed, each with a unique `@id`, validated against the schema.
 * @throws {PolicyLoadError} naming each file and place (line and column) Cedar reported.
 */
export function loadPolicySet(files: readonly string[], options: CheckPolicyOptions = {}): PolicySet {
  const result = checkPolicyFiles(files, options);
  if (!result.ok) throw new PolicyLoadError(result.issues);
  return result.policySet;
}
