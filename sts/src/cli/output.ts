/**
 * Output helpers of the operator CLI: one-line errors with an exit code, plain-text tables, and the
 * action wrapper every command runs through. Text that came from the STS (an agent's task, ids, error
 * descriptions) is printed through {@link safeText}, JSON through {@link safeJsonText}: nothing an
 * agent writes can move the cursor, rewrite a line or reorder what the operator reads.
 */
import { safeJsonText, safeText } from "../ops/safe_text.js";

/** Exit codes of the operator CLI (sysexits.h where one fits). */
export const EXIT = {
  /** The STS refused the call (4xx) or the input was wrong. */
  refused: 1,
  /** The STS could not be reached or answered 5xx (EX_UNAVAILABLE). */
  unavailable: 69,
  /** The embedded database is held by another process, e.g. a running STS (EX_TEMPFAIL). */
  busy: 75,
  /** A config file is missing or invalid (EX_CONFIG). */
  config: 78,
} as const;

/** An error the CLI prints as one line (`countersign: <message>`) before exiting with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.refused,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * Runs a command's action: a {@link CliError} becomes one line on stderr and its exit code; anything
 * else is rethrown (the entry point prints it).
 */
export function action<A extends unknown[]>(
  run: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await run(...args);
    } catch (error) {
      if (!(error instanceof CliError)) throw error;
      process.stderr.write(`countersign: ${safeText(error.message)}\n`);
      process.exitCode = error.exitCode;
    }
  };
}

/** Writes `value` as indented JSON (control and bidi characters escaped, see {@link safeJsonText}). */
export function printJson(value: unknown): void {
  process.stdout.write(`${safeJsonText(JSON.stringify(value, null, 2))}\n`);
}

/**
 * Formats rows as a left-aligned table with a header row, two spaces between columns; every cell
 * goes through {@link safeText}.
 */
export function table(headers: readonly string[], cells: readonly (readonly string[])[]): string {
  const rows = cells.map((row) => row.map(safeText));
  const widths = headers.map((header, i) =>
    Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return `${[line(headers), ...rows.map(line)].join("\n")}\n`;
}

/**
 * `text` on one line (whitespace runs become one space), made safe ({@link safeText}), and shortened
 * to `max` characters (code points) with an ellipsis.
 */
export function truncate(text: string, max: number): string {
  const single = [...safeText(text.replace(/\s+/g, " "))];
  return single.length <= max ? single.join("") : `${single.slice(0, max - 1).join("")}…`;
}
