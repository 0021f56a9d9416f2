/**
 * What the narrated demos (`npm run demo`, `npm run demo:mcp`) share: the narration (steps and
 * expected outcomes), an STS started in-process on the embedded database in a temporary data
 * directory, and the entry point that turns the outcome into the exit code.
 */
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { pathToFileURL } from "node:url";
import { type App, createApp } from "../sts/src/app.js";
import { loadConfig } from "../sts/src/config/load.js";
import { createLogger } from "../sts/src/ops/logger.js";
import { listen, type RunningServer } from "../sts/src/server.js";

/** Where the narration goes, and whether to colour it. */
export interface DemoOptions {
  write?: (text: string) => void;
  color?: boolean;
}

/** Finds a free port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Keeps the STS's log lines in memory (the last 200); they are printed only when a step fails. */
export class LogBuffer extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 200);
    callback();
  }
}

/** Prints the demo's steps and records whether each outcome is the expected one. */
export interface Narrator {
  /** Wraps `text` in an ANSI colour `code` when colouring. */
  paint(code: string, text: string): string;
  /** Prints a line. */
  line(text?: string): void;
  /** Prints an indented line. */
  say(text: string): void;
  /** Starts the next numbered step. */
  step(title: string): void;
  /** Records and prints whether an outcome is the expected one. */
  expect(label: string, ok: boolean, got: string): void;
  /** Records a failure outside any expectation (e.g. the demo stopped). */
  fail(message: string): void;
  /** Prints the summary (and, after a failure, the last STS log lines); true when nothing failed. */
  finish(logs: LogBuffer): boolean;
}

/** A {@link Narrator} writing to `options.write` (default stdout), coloured on a TTY unless NO_COLOR. */
export function createNarrator(options: DemoOptions = {}): Narrator {
  const write = options.write ?? ((text: string) => process.stdout.write(text));
  const color = options.color ?? (process.stdout.isTTY === true && process.env.NO_COLOR === undefined);
  const paint = (code: string, text: string) => (color ? `\u001b[${code}m${text}\u001b[0m` : text);
  const line = (text = "") => write(`${text}\n`);
  const say = (text: string) => line(`  ${text}`);
  let stepNumber = 0;
  const failures: string[] = [];
  return {
    paint,
    line,
    say,
    step(title) {
      stepNumber += 1;
      line();
      line(paint("1;36", `━━ Step ${stepNumber}. ${title} ━━`));
    },
    expect(label, ok, got) {
      if (ok) {
        say(paint("32", `✔ expected: ${label}`));
      } else {
        say(paint("31", `✘ expected: ${label}; got: ${got}`));
        failures.push(`step ${stepNumber}: expected ${label}; got ${got}`);
      }
    },
    fail(message) {
      failures.push(message);
    },
    finish(logs) {
      line();
      if (failures.length === 0) {
        line(paint("1;32", `All ${stepNumber} steps ended as expected.`));
        return true;
      }
      line(paint("1;31", `${failures.length} outcome(s) differed from the expected ones:`));
      for (const failure of failures) line(`  - ${failure}`);
      if (logs.lines.length > 0) {
        line("Last STS log lines:");
        for (const logLine of logs.lines.slice(-20)) line(`  ${logLine}`);
      }
      return false;
    },
  };
}

/** An STS listening on 127.0.0.1 with its own temporary data directory. */
export interface DemoSts {
  readonly url: string;
  readonly dataDir: string;
  /** The dev-mode token issuer (subjects and approvers). */
  readonly devIssuer: NonNullable<App["services"]["devIssuer"]>;
  /** Stops the STS and removes its data directory. */
  stop(): Promise<void>;
}

/**
 * Starts the STS in-process on the embedded database, on a free port, in a new temporary data
 * directory named `${dataDirPrefix}…`, logging into `logs`. `config` is the config file's content and
 * must turn `dev_mode` on. On failure nothing is left behind.
 */
export async function startDemoSts(options: {
  dataDirPrefix: string;
  config: Record<string, unknown>;
  logs: LogBuffer;
}): Promise<DemoSts> {
  const dataDir = mkdtempSync(path.join(tmpdir(), options.dataDirPrefix));
  let app: App | undefined;
  let running: RunningServer | undefined;
  const stop = async () => {
    if (running) await running.stop(1000);
    else await app?.close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const port = await freePort();
    const config = loadConfig(
      { HOST: "127.0.0.1", PORT: String(port), COUNTERSIGN_DATA_DIR: dataDir, LOG_LEVEL: "info" },
      options.config,
    );
    app = await createApp(config, { logger: createLogger("info", options.logs) });
    running = await listen(app, "127.0.0.1", port);
    const devIssuer = app.services.devIssuer;
    if (!devIssuer) throw new Error("the demo STS runs in dev mode and has a dev issuer");
    return { url: running.url, dataDir, devIssuer, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Runs `demo` when `moduleUrl` is the script node was started with; exit code 0 when it succeeds. */
export function runWhenMain(moduleUrl: string, demo: () => Promise<boolean>): void {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  demo().then(
    (ok) => {
      process.exitCode = ok ? 0 : 1;
    },
    (error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
