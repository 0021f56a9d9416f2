import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { root } from "../helpers/processes.js";

/** The absolute path of `name` on PATH (or in /usr/sbin, where Debian puts nginx), or undefined. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {}
  }
  return undefined;
}

/** A proxy process started by a test; `stop` kills it (SIGTERM, then SIGKILL) and waits for its exit. */
export interface RunningProxy {
  readonly origin: string;
  readonly output: () => string;
  stop(): Promise<void>;
}

function track(child: ChildProcess): { output: () => string; exited: Promise<void> } {
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { output: () => output, exited };
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** Waits until `origin` answers HTTP (at most 100 tries, 100 ms apart), or throws with the output. */
async function waitForHttp(origin: string, output: () => string, child: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`proxy exited ${child.exitCode}: ${output()}`);
    try {
      const response = await fetch(`${origin}/__ready`, { signal: AbortSignal.timeout(1000) });
      await response.arrayBuffer();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`proxy at ${origin} never answered: ${output()}`);
}

/**
 * Runs examples/nginx/nginx.conf, unprivileged paths only: the example with its addresses replaced,
 * in `dir` with `pid`, `error_log` and every temp path under it, `daemon off`, in the foreground.
 */
export async function startNginx(
  binary: string,
  dir: string,
  ports: { listen: number; authz: number; api: number },
): Promise<RunningProxy> {
  const example = readFileSync(path.join(root, "examples/nginx/nginx.conf"), "utf8");
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((name) => {
      mkdirSync(path.join(dir, name), { recursive: true });
      return `    ${name}_temp_path ${path.join(dir, name)};`;
    })
    .join("\n");
  const replace = (text: string, from: string, to: string) => {
    if (!text.includes(from)) throw new Error(`examples/nginx/nginx.conf no longer has "${from}"`);
    return text.replace(from, to);
  };
  let config = replace(example, "listen 127.0.0.1:8000;", `listen 127.0.0.1:${ports.listen};`);
  config = replace(config, "server 127.0.0.1:9191;", `server 127.0.0.1:${ports.authz};`);
  config = replace(config, "server 127.0.0.1:3000;", `server 127.0.0.1:${ports.api};`);
  config = replace(config, "http {\n", `http {\n${temp}\n    access_log ${path.join(dir, "access.log")};\n`);
  const file = path.join(dir, "nginx.conf");
  writeFileSync(file, config);
  const child = spawn(
    binary,
    [
      "-p",
      dir,
      "-e",
      path.join(dir, "error.log"),
      "-c",
      file,
      "-g",
      `daemon off; pid ${path.join(dir, "nginx.pid")};`,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const { output, exited } = track(child);
  const origin = `http://127.0.0.1:${ports.listen}`;
  const errorLog = () => {
    try {
      return `${output()}\n${readFileSync(path.join(dir, "error.log"), "utf8")}`;
    } catch {
      return output();
    }
  };
  try {
    await waitForHttp(origin, errorLog, child);
  } catch (error) {
    await stopChild(child, exited);
    throw error;
  }
  return { origin, output: errorLog, stop: () => stopChild(child, exited) };
}

/** Runs examples/caddy/Caddyfile as is, its addresses given through the environment, admin API off. */
export async function startCaddy(
  binary: string,
  dir: string,
  ports: { listen: number; authz: number; api: number },
): Promise<RunningProxy> {
  const child = spawn(
    binary,
    ["run", "--config", path.join(root, "examples/caddy/Caddyfile"), "--adapter", "caddyfile"],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        PATH: process.env.PATH ?? "",
        HOME: dir,
        XDG_DATA_HOME: path.join(dir, "data"),
        XDG_CONFIG_HOME: path.join(dir, "config"),
        CADDY_ADMIN: "off",
        CADDY_LISTEN: `127.0.0.1:${ports.listen}`,
        COUNTERSIGN_AUTHZ: `127.0.0.1:${ports.authz}`,
        API_UPSTREAM: `127.0.0.1:${ports.api}`,
      },
    },
  );
  const { output, exited } = track(child);
  const origin = `http://127.0.0.1:${ports.listen}`;
  try {
    await waitForHttp(origin, output, child);
  } catch (error) {
    await stopChild(child, exited);
    throw error;
  }
  return { origin, output, stop: () => stopChild(child, exited) };
}
