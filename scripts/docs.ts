/**
 * Generates the parts of docs/reference.md that are data: the reason-code table from
 * sts/src/reasons.ts. `npm run docs` rewrites them in place; test/docs/reference.test.ts fails when the
 * file and the code drift apart.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { REASONS, type WireError } from "../sts/src/reasons.js";

export const REFERENCE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../docs/reference.md");

const wire = (answer: WireError | undefined) => (answer ? `${answer.status} \`${answer.error}\`` : "—");

/** The reason table as Markdown, one row per code, in the table's order. */
export function renderReasonTable(): string {
  const rows = Object.entries(REASONS).map(([reason, entry]) => {
    const { token, approvals } = entry as { token?: WireError; approvals?: WireError };
    return `| \`${reason}\` | ${wire(token)} | ${wire(approvals)} | ${entry.meaning} |`;
  });
  return [
    "| reason | at `POST /token` | at the approval API | meaning |",
    "| --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
}

const START = "<!-- generated: reasons (npm run docs) -->";
const END = "<!-- end: reasons -->";

/** The reference with its generated parts replaced by what the code says now. */
export function regenerate(text: string): string {
  const start = text.indexOf(START);
  const end = text.indexOf(END);
  if (start < 0 || end < start) throw new Error(`docs/reference.md lacks the ${START} … ${END} markers`);
  return `${text.slice(0, start + START.length)}\n${renderReasonTable()}\n${text.slice(end)}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeFileSync(REFERENCE, regenerate(readFileSync(REFERENCE, "utf8")));
  process.stdout.write(`updated ${path.relative(process.cwd(), REFERENCE)}\n`);
}
