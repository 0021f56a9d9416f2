import { existsSync } from "node:fs";
import path from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import type { Config } from "../config/load.js";
import { parseBaseUrl } from "./api_client.js";
import { fetchIssuer } from "./dev_credentials.js";
import { action, CliError, EXIT } from "./output.js";

/** Options of `countersign dev-token`. */
interface DevTokenOptions {
  sub: string;
  usage: "approver" | "subject" | "actor";
  ttl: number;
  url?: string;
  json?: boolean;
}

/** Longest dev-token lifetime, in seconds (one day). */
const MAX_DEV_TOKEN_TTL_SECONDS = 86_400;

/** The development issuer's key file in the data directory (as `identity/dev_issuer.ts` names it). */
const DEV_ISSUER_KEY_FILE = "dev-issuer.jwk";

function parseTtl(value: string): number {
  const ttl = /^[0-9]{1,6}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_DEV_TOKEN_TTL_SECONDS) {
    throw new InvalidArgumentError(`must be an integer from 1 to ${MAX_DEV_TOKEN_TTL_SECONDS} (seconds)`);
  }
  return ttl;
}

function parseSub(value: string): string {
  if (value.length === 0 || value.length > 255) throw new InvalidArgumentError("must be 1 to 255 characters");
  return value;
}

/**
 * Prints a token from the local development issuer, signed with the key the STS uses,
 * `<COUNTERSIGN_DATA_DIR>/dev-issuer.jwk`, for the STS's issuer: the one published at `--url` /
 * `COUNTERSIGN_URL` when given, otherwise the one the config and `HOST`/`PORT` give (as the STS
 * computes it). Refused unless `dev_mode` is true, and when the data directory holds no development key:
 * a key created here would sign tokens no running STS trusts.
 */
async function devToken(loadConfig: () => Config, options: DevTokenOptions): Promise<void> {
  const config = loadConfig();
  if (!config.dev_mode) {
    throw new CliError(
      `dev-token is refused: dev_mode is false in ${config.source}; this STS does not trust development tokens`,
    );
  }
  const dataDir = config.database.dataDir;
  if (!existsSync(path.join(dataDir, DEV_ISSUER_KEY_FILE))) {
    throw new CliError(
      `no development issuer key in ${dataDir}: set COUNTERSIGN_DATA_DIR to the data directory of the ` +
        "running STS (it creates the key when it starts in dev mode)",
      EXIT.config,
    );
  }
  const issuer = options.url ? await fetchIssuer(parseBaseUrl(options.url)) : config.issuer;
  const { loadDevIssuer } = await import("../identity/dev_issuer.js");
  const devIssuer = await loadDevIssuer({ issuer, dataDir });
  const token = await devIssuer.mint({ sub: options.sub, usage: options.usage, ttlSeconds: options.ttl });
  if (!options.json) {
    process.stdout.write(`${token}\n`);
    return;
  }
  process.stdout.write(
    `${JSON.stringify({
      token,
      token_type: "Bearer",
      issuer: devIssuer.issuer,
      audience: devIssuer.audience,
      sub: options.sub,
      usage: options.usage,
      expires_in: options.ttl,
      expires_at: new Date(Date.now() + options.ttl * 1000).toISOString(),
    })}\n`,
  );
}

/** Registers `countersign dev-token` on `program`. */
export function registerDevTokenCommand(program: Command, loadConfig: () => Config): void {
  program
    .command("dev-token")
    .description("print a token from the local development issuer (dev_mode only)")
    .requiredOption("--sub <sub>", "the token's subject (`sub`)", parseSub)
    .addOption(
      new Option("--usage <usage>", "what the token is for")
        .choices(["approver", "subject", "actor"])
        .makeOptionMandatory(),
    )
    .option("--ttl <seconds>", "lifetime in seconds", parseTtl, 3600)
    .addOption(
      new Option(
        "--url <url>",
        "the STS whose issuer the token is for (default: the issuer from the config, HOST and PORT)",
      ).env("COUNTERSIGN_URL"),
    )
    .option("--json", "print JSON with the token and its details")
    .action(action((options: DevTokenOptions) => devToken(loadConfig, options)));
}
