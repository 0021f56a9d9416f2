import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { basicAuth, postForm, startTestApp, TEST_SECRET, type TestApp } from "../../helpers/app.js";

/** Everything written to this process's stderr while `run` runs (Koa's default error print goes there). */
async function capturingStderr(run: () => Promise<void>): Promise<string> {
  const written: string[] = [];
  const original = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    written.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
    return original(chunk, ...(rest as []));
  }) as typeof process.stderr.write;
  try {
    await run();
  } finally {
    process.stderr.write = original;
  }
  return written.join("");
}

describe("a client resetting its connection mid-request is one structured log line", () => {
  let sts: TestApp;
  let agentToken: string;

  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
    const answer = await postForm(
      `${sts.url}/token`,
      { grant_type: "client_credentials", scope: "approvals:request" },
      { authorization: basicAuth("billing-agent", TEST_SECRET) },
    );
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    agentToken = answer.body.access_token as string;
  });
  after(() => sts.stop());

  /**
   * Sends the head of `POST path` announcing a 30 000-byte body (under both routes' limits), then 1 000 bytes of it, waits until the
   * server has read them (its answer cannot come before the body is complete), then closes the
   * connection (`reset`: with an RST) and returns the log lines written from the start until the server
   * has dropped the connection and answered one more request.
   */
  async function halfRequest(path: string, headers: Record<string, string>, reset: boolean) {
    const from = sts.logs.lines.length;
    const { port } = new URL(sts.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    await once(socket, "connect");
    const head = Object.entries({ host: `127.0.0.1:${port}`, ...headers, "content-length": "30000" })
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join("");
    socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n${"a".repeat(1000)}`);
    // The server is inside the request once it holds the connection; give it the bytes.
    for (let i = 0; i < 200 && (await connections()) === 0; i++) await delay(5);
    await delay(50);
    if (reset) socket.resetAndDestroy();
    else socket.destroy();
    // Bounded wait for the server to see the close and drop the connection, then one more round trip.
    for (let i = 0; i < 400 && ((await connections()) > 0 || sts.logs.lines.length === from); i++) {
      await delay(5);
    }
    assert.equal((await fetch(`${sts.url}/healthz`)).status, 200);
    return sts.logs.lines.slice(from);
  }

  function connections(): Promise<number> {
    return new Promise((resolve, reject) =>
      sts.running.server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
    );
  }

  test("a malformed request still gets Node's 400 and one line, reason client_request_malformed", async () => {
    const from = sts.logs.lines.length;
    const { port } = new URL(sts.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    await once(socket, "connect");
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    const closed = once(socket, "close");
    socket.write("NOT/HTTP\r\n\r\n");
    await closed;
    assert.match(Buffer.concat(chunks).toString("latin1"), /^HTTP\/1\.1 400 Bad Request\r\n/);
    const lines = sts.logs.lines.slice(from).map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(
      lines.map((line) => [line.event, line.reason, line.msg]),
      [["http.client_error", "client_request_malformed", "client request refused"]],
    );
    assert.match(lines[0]?.code as string, /^HPE_/);
  });

  for (const [name, path, headers] of [
    [
      "POST /approvals",
      "/approvals",
      () => ({ "content-type": "application/json", authorization: `Bearer ${agentToken}` }),
    ],
    [
      "POST /token",
      "/token",
      () => ({
        "content-type": "application/x-www-form-urlencoded",
        authorization: basicAuth("billing-agent", TEST_SECRET),
      }),
    ],
  ] as const) {
    for (const reset of [false, true]) {
      test(`${name}, half a body, then ${reset ? "an RST" : "a close"}: one JSON line, reason client_disconnected, no stack`, async () => {
        let lines: string[] = [];
        const stderr = await capturingStderr(async () => {
          lines = await halfRequest(path, headers(), reset);
        });
        assert.equal(lines.length, 1, lines.join("\n"));
        const line = JSON.parse(lines[0]!) as Record<string, unknown>;
        assert.equal(line.event, "http.client_error");
        assert.equal(line.reason, "client_disconnected");
        assert.equal(line.level, 30);
        assert.equal(line.msg, "client closed the connection mid-request");
        assert.ok(["ECONNRESET", "HPE_INVALID_EOF_STATE"].includes(line.code as string), String(line.code));
        assert.equal(line.method, "POST");
        assert.equal(line.path, path);
        assert.equal(line.err, undefined);
        assert.doesNotMatch(lines[0]!, /\\n\s+at |"stack"/);
        assert.doesNotMatch(stderr, /\n\s+at /);
      });
    }
  }
});
