import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { type App, type AppOptions, createApp } from "../../sts/src/app.js";
import { type Config, loadConfig } from "../../sts/src/config/load.js";
import type { DatabaseHandle } from "../../sts/src/db/connect.js";
import { createLogger } from "../../sts/src/ops/logger.js";
import { listen, type RunningServer } from "../../sts/src/server.js";
import { createTestDatabase, type TestDatabase, type TestEngine } from "./database.js";

/** Finds a free port on 127.0.0.1 (so the issuer URL is known before the provider is built). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Captures log lines in memory so tests can assert what was (never) logged. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    callback();
  }
  get text(): string {
    return this.lines.join("\n");
  }
}

/** Options for {@link startTestApp}. */
export interface TestAppOptions {
  engine: TestEngine;
  /**
   * Config file content (merged over the development default's keys when `useDefault`), or a function
   * of the issuer (`http://127.0.0.1:<port>`) returning it, for entries that must name the issuer.
   */
  config?: Record<string, unknown> | ((issuer: string) => Record<string, unknown>);
  /** Reuse a database (e.g. two instances on one Postgres); otherwise a fresh one is created. */
  database?: TestDatabase;
  /** Reuse a data directory (for a restart); otherwise a fresh temporary one. */
  dataDir?: string;
  env?: Record<string, string>;
  /** Overrides passed to createApp (e.g. exchange guards). */
  appOptions?: Omit<AppOptions, "logger" | "database">;
}

/** A whole STS listening on 127.0.0.1, on its own database. */
export interface TestApp {
  readonly url: string;
  readonly app: App;
  readonly config: Config;
  readonly running: RunningServer;
  readonly database: TestDatabase;
  readonly handle: DatabaseHandle;
  readonly logs: LogCapture;
  readonly dataDir: string;
  /** Stops the server and closes the database; drops it unless `keepDatabase`. */
  stop(options?: { keepDatabase?: boolean; keepDataDir?: boolean }): Promise<void>;
}

/** A client secret long enough for the config schema. */
export const TEST_SECRET = "test-secret-0123456789-abcdefghijklmnop";

/**
 * `approvals` bounds high enough for suites that ask for many approvals in a moment; the per-agent
 * bounds themselves are tested in test/sts/approvals/approval_bounds.test.ts.
 */
export const LIFTED_APPROVAL_BOUNDS = {
  max_pending_per_agent: 10_000,
  request_rate_limit: { per_second: 10_000, burst: 10_000 },
};

/** A config file most suites start from: one resource, clients for every auth method but private_key_jwt. */
export function baseConfig(): Record<string, unknown> {
  return {
    resources: [
      {
        id: "https://crm.example.test",
        scopes: ["crm:read", "crm:write", "crm:delete"],
        max_ttl_seconds: 300,
        rate_limit: { per_second: 5, burst: 10 },
      },
      { id: "https://mail.example.test", scopes: ["mail:send", "mail:read"] },
    ],
    clients: [
      {
        client_id: "billing-agent",
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_basic",
      },
      {
        client_id: "post-agent",
        client_secret: TEST_SECRET,
        token_endpoint_auth_method: "client_secret_post",
      },
    ],
    trusted_issuers: [],
    approvals: LIFTED_APPROVAL_BOUNDS,
    dev_mode: true,
  };
}

/**
 * Starts a whole app on a free port against PGlite (in memory) or a fresh Postgres database. When the
 * start fails (an invalid policy or config, a port taken), what it had opened is closed in reverse
 * order (app, database handle, fresh database, temporary data directory) and the error is rethrown,
 * so the test reports it and its process still ends: an open PGlite keeps a timer armed.
 */
export async function startTestApp(options: TestAppOptions): Promise<TestApp> {
  const cleanups: (() => unknown)[] = [];
  try {
    const database = options.database ?? (await createTestDatabase(options.engine));
    if (!options.database) cleanups.push(() => database.dispose());
    const dataDir = options.dataDir ?? mkdtempSync(path.join(tmpdir(), "countersign-test-"));
    if (!options.dataDir) cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const config = loadConfig(
      {
        HOST: "127.0.0.1",
        PORT: String(port),
        COUNTERSIGN_DATA_DIR: dataDir,
        LOG_LEVEL: "info",
        ...(database.url ? { DATABASE_URL: database.url } : {}),
        ...options.env,
      },
      typeof options.config === "function"
        ? options.config(`http://127.0.0.1:${port}`)
        : (options.config ?? baseConfig()),
    );
    const logs = new LogCapture();
    const handle = await database.open();
    cleanups.push(() => handle.close());
    const app = await createApp(config, {
      ...options.appOptions,
      logger: createLogger("info", logs, { maxRepeats: config.logMaxRepeats }),
      database: handle,
    });
    cleanups.push(() => app.close());
    const running = await listen(app, "127.0.0.1", port);
    return {
      url: running.url,
      app,
      config,
      running,
      database,
      handle,
      logs,
      dataDir,
      async stop(stopOptions = {}) {
        await running.stop(2000);
        await handle.close();
        if (!stopOptions.keepDatabase && !options.database) await database.dispose();
        if (!stopOptions.keepDataDir && !options.dataDir) rmSync(dataDir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    // The start's own error is the one to report; a failing cleanup must not replace it.
    for (const cleanup of cleanups.reverse())
      await Promise.resolve()
        .then(cleanup)
        .catch(() => {});
    throw error;
  }
}

/** `Authorization: Basic` for a client per RFC 6749 §2.3.1 (form-urlencoded id and secret). */
export function basicAuth(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString("base64")}`;
}

/** POSTs a form to `url` and returns status, headers and parsed JSON body. */
export async function postForm(
  url: string,
  form: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(form).toString(),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/** A JSON answer: status and parsed body. */
export interface JsonReply {
  status: number;
  body: Record<string, unknown>;
}

/**
 * Sends a request with `Authorization: Bearer <token>` and returns status and parsed JSON body. A
 * string `body` is sent as it is (for bodies `JSON.stringify` cannot write); anything else as JSON.
 */
export async function bearerJson(
  url: string,
  token: string,
  method: string,
  body?: unknown,
): Promise<JsonReply> {
  const response = await fetch(url, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}
