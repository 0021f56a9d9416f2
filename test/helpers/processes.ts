import { type ChildProcess, execFile } from "node:child_process";
import path from "node:path";

/** The repository's root. */
export const root = path.resolve(import.meta.dirname, "../..");

/** The `countersign` command (`bin/countersign.js`). */
export const cli = path.join(root, "bin/countersign.js");

/** What a finished `countersign` run printed, and its exit code. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `countersign …` on this Node (22) and returns its exit code and output, whatever the code.
 * The variables that point it at a server or a database (`DATABASE_URL`, `COUNTERSIGN_CONFIG`,
 * `COUNTERSIGN_TOKEN`, `COUNTERSIGN_URL`, `COUNTERSIGN_DATA_DIR`, `HOST`, `PORT`) are not inherited:
 * each test passes the ones it means in `env`.
 */
export function countersign(
  args: string[],
  env: Record<string, string> = {},
  options: { cwd?: string } = {},
): Promise<Run> {
  const {
    DATABASE_URL: _db,
    COUNTERSIGN_CONFIG: _config,
    COUNTERSIGN_TOKEN: _token,
    COUNTERSIGN_URL: _url,
    COUNTERSIGN_DATA_DIR: _dataDir,
    HOST: _host,
    PORT: _port,
    ...rest
  } = process.env;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cli, ...args],
      { env: { ...rest, ...env }, timeout: 60_000, ...(options.cwd ? { cwd: options.cwd } : {}) },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Resolves with the first stdout line of `child` matching `pattern`; rejects after `timeoutMs`. */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    let errors = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      errors += chunk.toString();
    });
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${pattern}: ${buffer} ${errors}`)),
      timeoutMs,
    );
    child.stdout?.on("data", (chunk: Buffer) => {
      buffer += chunk.toString();
      const line = buffer.split("\n").find((l) => pattern.test(l));
      if (line) {
        clearTimeout(timer);
        resolve(line);
      }
    });
  });
}
