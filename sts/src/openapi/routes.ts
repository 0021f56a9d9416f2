import Router from "@koa/router";
import { buildOpenApiDocument, type OpenApiOptions } from "./document.js";

/**
 * `GET /openapi.json`: the OpenAPI 3.1 document (no authentication; it describes only public
 * interfaces). Built once, served with a short public cache.
 */
export function openApiRoutes(options: OpenApiOptions): Router {
  const body = JSON.stringify(buildOpenApiDocument(options));
  const router = new Router();
  router.get("/openapi.json", (ctx) => {
    ctx.set("Cache-Control", "public, max-age=300");
    ctx.type = "application/json";
    ctx.body = body;
  });
  return router;
}
