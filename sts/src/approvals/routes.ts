import Router from "@koa/router";
import type { StsServices } from "../services.js";

/** The approval API (CONTRACT §3). */
export function approvalRoutes(_services: StsServices): Router {
  const router = new Router();
  return router;
}
