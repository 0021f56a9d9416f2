import Router from "@koa/router";
import { type Kysely, sql } from "kysely";
import type { Database } from "../db/schema.js";
import type { Metrics } from "../ops/metrics.js";

/** `/healthz` (the process is alive), `/readyz` (the database answers) and Prometheus `/metrics`. */
export function opsRoutes(db: Kysely<Database>, metrics: Metrics, isDraining: () => boolean): Router {
  const router = new Router();
  router.get("/healthz", (ctx) => {
    ctx.body = { status: "ok" };
  });
  router.get("/readyz", async (ctx) => {
    if (isDraining()) {
      ctx.status = 503;
      ctx.body = { status: "draining" };
      return;
    }
    try {
      await Promise.race([
        sql`select 1`.execute(db),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error("readiness probe timed out")), 2000).unref(),
        ),
      ]);
      ctx.body = { status: "ok", database: "ok" };
    } catch {
      ctx.status = 503;
      ctx.body = { status: "unavailable", database: "unreachable" };
    }
  });
  router.get("/metrics", async (ctx) => {
    ctx.type = metrics.registry.contentType;
    ctx.body = await metrics.registry.metrics();
  });
  return router;
}
