import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { freePort, TEST_SECRET } from "../../helpers/app.js";
import { cli, waitForLine } from "../../helpers/processes.js";

test("SIGTERM: an in-flight request finishes, then the process exits 0", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "countersign-sigterm-"));
  const port = await freePort();
  const configFile = path.join(dir, "config.json");
  writeFileSync(
    configFile,
    JSON.stringify({
      clients: [
        {
          client_id: "billing-agent",
          client_secret: TEST_SECRET,
          token_endpoint_auth_method: "client_secret_post",
        },
      ],
      dev_mode: true,
    }),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    COUNTERSIGN_DATA_DIR: dir,
    COUNTERSIGN_CONFIG: configFile,
  };
  delete env.DATABASE_URL;
  const child = spawn(process.execPath, [cli, "serve"], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    const line = await waitForLine(child, /countersign listening/, 120_000);
    assert.match(line, new RegExp(`"url":"http://127.0.0.1:${port}"`));

    // Send the headers now and the body only after SIGTERM: the request is in flight across the signal.
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: "billing-agent",
      client_secret: TEST_SECRET,
    }).toString();
    const socket = net.connect(port, "127.0.0.1");
    await once(socket, "connect");
    socket.write(
      `POST /token HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
    );
    const response = new Promise<string>((resolve) => {
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString();
      });
      socket.on("end", () => resolve(text));
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    await new Promise((resolve) => setTimeout(resolve, 300));
    socket.write(body);
    const text = await response;
    assert.match(text, /^HTTP\/1\.1 200 OK/);
    assert.match(text, /"token_type":"Bearer"/);
    const [code] = await exited;
    assert.equal(code, 0);
    // A new connection is refused once the server has stopped.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
