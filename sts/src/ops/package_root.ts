import path from "node:path";
import { fileURLToPath } from "node:url";

/** This module's own directory: `sts/src/ops/` in the sources, `dist/sts/src/ops/` once compiled. */
const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The package's root directory (the one holding `package.json`, `policies/` and `sts/`), the same
 * whether this code runs from its TypeScript sources (tsx: `npm run dev`, `npx countersign`, the tests)
 * or compiled into `dist/` (`npm start`). Files that are not TypeScript (the Cedar schema and default
 * policy, the console's static files) are read from there: `tsc` does not copy them into `dist/`, and an
 * edit to `policies/` must not need a rebuild.
 */
export const PACKAGE_ROOT = path.resolve(here, import.meta.url.endsWith(".ts") ? "../../.." : "../../../..");

/** The absolute path of `relative` (slash-separated, from the package root). */
export function packagePath(relative: string): string {
  return path.join(PACKAGE_ROOT, ...relative.split("/"));
}
