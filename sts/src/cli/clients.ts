import { randomBytes } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { type Command, Option } from "commander";
import type { z } from "zod";
import { developmentDefault } from "../config/load.js";
import { configFileSchema } from "../config/schema.js";
import { action, CliError, EXIT, printJson, table } from "./output.js";

const AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"] as const;
type AuthMethod = (typeof AUTH_METHODS)[number];

/** Options of `clients add`. */
interface AddOptions {
  id: string;
  auth: AuthMethod;
  jwks?: string;
  name?: string;
  config?: string;
  json?: boolean;
}

/** Options of `clients list`. */
interface ListOptions {
  config?: string;
  json?: boolean;
}

/** A config file as raw JSON (kept as written: defaults are not filled in). */
type RawConfig = Record<string, unknown> & { clients?: unknown };

function configPath(option: string | undefined): string {
  const file = option ?? process.env.COUNTERSIGN_CONFIG;
  if (!file) {
    throw new CliError("no config file: pass --config FILE or set COUNTERSIGN_CONFIG", EXIT.config);
  }
  return path.resolve(file);
}

/** Reads the config file; `undefined` when it does not exist and `missingOk` (then `clients add` creates it). */
function readRaw(file: string, missingOk: true): RawConfig | undefined;
function readRaw(file: string, missingOk?: false): RawConfig;
function readRaw(file: string, missingOk = false): RawConfig | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT" && missingOk) return undefined;
    throw new CliError(
      code === "ENOENT"
        ? `${file} does not exist (\`countersign clients add --config ${file} …\` creates it)`
        : `cannot read ${file}`,
      EXIT.config,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CliError(`${file} is not valid JSON (${(error as Error).message})`, EXIT.config);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new CliError(`${file} must hold a JSON object`, EXIT.config);
  }
  return value as RawConfig;
}

function issuesOf(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const key = issue.path.reduce<string>(
        (acc, part) =>
          typeof part === "number" ? `${acc}[${part}]` : acc ? `${acc}.${String(part)}` : String(part),
        "",
      );
      return `${key || "(root)"}: ${issue.message}`;
    })
    .join("; ");
}

/** Writes `text` to `file` atomically: a temporary file beside it (same mode), fsync, rename. */
function writeAtomically(file: string, text: string): void {
  let mode = 0o600;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    // a new file: owner only (it holds secrets)
  }
  const temporary = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`,
  );
  const fd = openSync(temporary, "wx", mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temporary, file);
  } catch (error) {
    unlinkSync(temporary);
    throw error;
  }
}

function readJwks(file: string): { keys: unknown[] } {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path.resolve(file), "utf8"));
  } catch (error) {
    throw new CliError(`--jwks: cannot read a JSON file at ${file} (${(error as Error).message})`);
  }
  if (value && typeof value === "object" && Array.isArray((value as { keys?: unknown }).keys)) {
    return { keys: (value as { keys: unknown[] }).keys };
  }
  if (value && typeof value === "object" && "kty" in value) return { keys: [value] };
  throw new CliError('--jwks: the file must hold a JWK Set ({"keys": [...]}) or one public JWK');
}

/** The resource ids of a raw config, for the message after creating one. */
function resourceIds(raw: RawConfig): string {
  const resources = Array.isArray(raw.resources) ? (raw.resources as Array<{ id?: unknown }>) : [];
  return resources.map((resource) => String(resource.id)).join(", ") || "(none)";
}

/**
 * `countersign clients add|list`: edits the agents (OAuth clients) in the JSON config file named by
 * `--config` or `COUNTERSIGN_CONFIG`. The STS reads its config at start: restart it after a change.
 * `add` creates a missing file from the development default (mode 0600: it holds client secrets).
 */
export function registerClientCommands(program: Command): void {
  const clients = program.command("clients").description("the agents (OAuth clients) in the config file");

  clients
    .command("add")
    .description(
      "add a client to the config file (a generated secret is printed once); a missing file is created from the development default",
    )
    .requiredOption("--id <client_id>", "the client_id")
    .addOption(
      new Option("--auth <method>", "token endpoint authentication method")
        .choices(AUTH_METHODS)
        .makeOptionMandatory(),
    )
    .option("--jwks <file>", "private_key_jwt: a JSON file with the client's public JWK Set (or one JWK)")
    .option("--name <name>", "a display name (client_name)")
    .option("--config <file>", "the config file (default: COUNTERSIGN_CONFIG)")
    .option("--json", "print JSON")
    .action(
      action(async (options: AddOptions) => {
        const file = configPath(options.config);
        // No file yet: start from the development default (its resource, dev_mode true), which is what
        // the STS runs without a config file, so the new file keeps everything that worked before.
        const found = readRaw(file, true);
        const raw = found ?? (developmentDefault() as RawConfig);
        const existing = raw.clients === undefined ? [] : raw.clients;
        if (!Array.isArray(existing)) throw new CliError(`${file}: clients must be an array`, EXIT.config);
        if (existing.some((c) => (c as { client_id?: unknown })?.client_id === options.id)) {
          throw new CliError(`client ${options.id} already exists in ${file}`);
        }
        if (options.auth === "private_key_jwt" && !options.jwks) {
          throw new CliError("--jwks FILE is required with --auth private_key_jwt");
        }
        if (options.auth !== "private_key_jwt" && options.jwks) {
          throw new CliError(`--jwks is only for private_key_jwt, not ${options.auth}`);
        }
        const secret = options.auth === "private_key_jwt" ? undefined : randomBytes(32).toString("base64url");
        const client: Record<string, unknown> = {
          client_id: options.id,
          token_endpoint_auth_method: options.auth,
          ...(secret ? { client_secret: secret } : {}),
          ...(options.jwks ? { jwks: readJwks(options.jwks) } : {}),
          ...(options.name ? { client_name: options.name } : {}),
        };
        const next = { ...raw, clients: [...existing, client] };
        const parsed = configFileSchema.safeParse(next);
        if (!parsed.success) {
          throw new CliError(`not written: the result would be invalid: ${issuesOf(parsed.error)}`);
        }
        writeAtomically(file, `${JSON.stringify(next, null, 2)}\n`);
        if (options.json) {
          printJson({
            client_id: options.id,
            token_endpoint_auth_method: options.auth,
            ...(secret ? { client_secret: secret } : {}),
            config: file,
            created: !found,
          });
          return;
        }
        if (!found) {
          process.stdout.write(
            `created ${file} (mode 0600) from the development default: dev_mode true, resources ${resourceIds(next)}\n`,
          );
        }
        process.stdout.write(`added client ${options.id} (${options.auth}) to ${file}\n`);
        const load = found
          ? "Restart the STS to load the client."
          : `Start the STS with COUNTERSIGN_CONFIG=${file} to load the client.`;
        if (secret) {
          process.stdout.write(`client_secret: ${secret}\n`);
          process.stdout.write(`store the secret now: it is not shown again. ${load}\n`);
        } else {
          process.stdout.write(`${load}\n`);
        }
      }),
    );

  clients
    .command("list")
    .description("list the clients in the config file (never their secrets)")
    .option("--config <file>", "the config file (default: COUNTERSIGN_CONFIG)")
    .option("--json", "print JSON")
    .action(
      action(async (options: ListOptions) => {
        const file = configPath(options.config);
        const parsed = configFileSchema.safeParse(readRaw(file));
        if (!parsed.success) throw new CliError(`${file} is invalid: ${issuesOf(parsed.error)}`, EXIT.config);
        const list = parsed.data.clients.map((c) => ({
          client_id: c.client_id,
          token_endpoint_auth_method: c.token_endpoint_auth_method,
          client_name: c.client_name ?? null,
          keys: c.jwks?.keys.length ?? 0,
        }));
        if (options.json) return printJson(list);
        if (list.length === 0) {
          process.stdout.write(`no clients in ${file}\n`);
          return;
        }
        process.stdout.write(
          table(
            ["CLIENT_ID", "AUTH", "KEYS", "NAME"],
            list.map((c) => [
              c.client_id,
              c.token_endpoint_auth_method,
              String(c.keys),
              c.client_name ?? "-",
            ]),
          ),
        );
      }),
    );
}
