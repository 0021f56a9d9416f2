import { envSchema } from "../config/schema.js";
import { CliError, EXIT } from "./output.js";

/**
 * Where the STS is when neither `--url` nor `COUNTERSIGN_URL` says: `http://HOST:PORT` from the same
 * `HOST` and `PORT` the STS listens on (defaults `127.0.0.1` and `8080`), a wildcard `HOST` (`0.0.0.0`,
 * `::`) reached over loopback. So `PORT=9000 npm start` and `PORT=9000 npx countersign …` agree.
 * @throws {CliError} (exit 78) when `HOST` or `PORT` is invalid.
 */
export function defaultStsUrl(env: NodeJS.ProcessEnv): string {
  const parsed = envSchema.pick({ HOST: true, PORT: true }).safeParse(env);
  if (!parsed.success) {
    const keys = [...new Set(parsed.error.issues.map((issue) => String(issue.path[0])))];
    throw new CliError(`invalid ${keys.join(", ")}: set --url or COUNTERSIGN_URL instead`, EXIT.config);
  }
  const { HOST: host, PORT: port } = parsed.data;
  const reachable = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return `http://${reachable.includes(":") ? `[${reachable}]` : reachable}:${port}`;
}

/**
 * The STS base URL the CLI talks to: `--url`, else `COUNTERSIGN_URL` (commander reads it into the same
 * option), else {@link defaultStsUrl}; normalised by {@link parseBaseUrl}.
 */
export function stsUrl(option: string | undefined): string {
  return parseBaseUrl(option ?? defaultStsUrl(process.env));
}

/** The one-line error when the STS at `url` cannot be reached. */
export function unreachable(url: string, reason = ""): CliError {
  return new CliError(
    `cannot reach ${url}${reason}: is \`npm start\` running? (the STS's address: --url or COUNTERSIGN_URL)`,
    EXIT.unavailable,
  );
}

/** A JSON-over-HTTP client for a running STS's approval API, mapping failures to {@link CliError}s. */
export interface ApiClient {
  readonly url: string;
  /**
   * Calls `method path` with an optional JSON body.
   * @param subject - what the call is about (`apr_…`), for error messages.
   * @throws {CliError} one line: `no approval apr_… (404)`, `cannot reach …`, `<error_description> (status error)`.
   */
  request<T>(
    method: string,
    path: string,
    options?: { body?: unknown; subject?: string; action?: string },
  ): Promise<T>;
}

/** How long one call may take, in milliseconds. */
const REQUEST_TIMEOUT_MS = 30_000;

/** Normalises and checks a base URL given with `--url` or `COUNTERSIGN_URL`. */
export function parseBaseUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliError(`--url: ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new CliError("--url: must be http or https");
  return url.toString().replace(/\/+$/, "");
}

/** Creates an {@link ApiClient} for `url` presenting `token` as a Bearer credential. */
export function createApiClient(url: string, token: string): ApiClient {
  return {
    url,
    async request<T>(
      method: string,
      path: string,
      options: { body?: unknown; subject?: string; action?: string } = {},
    ) {
      let response: Response;
      try {
        response = await fetch(`${url}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${token}`,
            accept: "application/json",
            ...(options.body === undefined ? {} : { "content-type": "application/json" }),
          },
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
          redirect: "error",
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch (error) {
        throw unreachable(url, (error as Error).name === "TimeoutError" ? " (timed out)" : "");
      }
      const text = await response.text();
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : {};
      } catch {
        throw new CliError(
          `${url}${path} answered ${response.status} with something other than JSON: is --url an STS?`,
          EXIT.unavailable,
        );
      }
      if (response.ok) return body as T;
      const { error, error_description: description } = (body ?? {}) as {
        error?: unknown;
        error_description?: unknown;
      };
      const code = typeof error === "string" ? error : "error";
      const text2 = typeof description === "string" ? description : response.statusText;
      const exitCode = response.status >= 500 ? EXIT.unavailable : EXIT.refused;
      if (response.status === 404 && options.subject) {
        throw new CliError(`no approval ${options.subject} (404)`, exitCode);
      }
      const prefix = options.action && options.subject ? `cannot ${options.action} ${options.subject}: ` : "";
      const hint =
        response.status === 401
          ? "; pass an approver token with --token or COUNTERSIGN_TOKEN (in dev mode: --as <sub>)"
          : "";
      throw new CliError(`${prefix}${text2} (${response.status} ${code})${hint}`, exitCode);
    },
  };
}
