import http from "node:http";
import type { AddressInfo } from "node:net";
import type { WebhookEvent } from "../../sts/src/webhooks/dispatcher.js";

/** One POST a {@link Receiver} got. */
export interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

/** A webhook receiver on 127.0.0.1: answers from a per-path plan of statuses (then 200), records all. */
export class Receiver {
  readonly received: Received[] = [];
  readonly plans = new Map<string, number[]>();
  private waiters: Array<{ predicate: (all: Received[]) => boolean; resolve: () => void }> = [];
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const path = req.url ?? "/";
      const status = this.plans.get(path)?.shift() ?? 200;
      this.received.push({
        path,
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        status,
      });
      res.writeHead(status, { "content-type": "text/plain" }).end("ok");
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.predicate(this.received)) return true;
        waiter.resolve();
        return false;
      });
    });
  });
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves once the recorded requests satisfy `predicate`. */
  until(predicate: (all: Received[]) => boolean): Promise<void> {
    if (predicate(this.received)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ predicate, resolve }));
  }

  /** The requests carrying the event of `type` for `approvalId` (events about one approval), on `path`. */
  of(path: string, type: string, approvalId: string): Received[] {
    return this.received.filter((r) => {
      if (r.path !== path) return false;
      const event = JSON.parse(r.body) as Partial<WebhookEvent>;
      return event.type === type && event.approval?.id === approvalId;
    });
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
