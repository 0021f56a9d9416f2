import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { CONSOLE_CSP } from "../../sts/src/console/routes.js";
import { startTestApp, type TestApp } from "../helpers/app.js";

const STATIC_DIR = fileURLToPath(new URL("../../sts/src/console/static/", import.meta.url));

/** The headers every console response carries, the page's and each asset's alike. */
const SECURITY_HEADERS = [
  "content-security-policy",
  "x-content-type-options",
  "referrer-policy",
  "x-frame-options",
  "cross-origin-opener-policy",
  "cross-origin-resource-policy",
  "permissions-policy",
] as const;

const CONTENT_TYPES: Readonly<Record<string, RegExp>> = {
  js: /^text\/javascript; charset=utf-8$/,
  css: /^text\/css; charset=utf-8$/,
  svg: /^image\/svg\+xml$/,
};

/** Ways to turn a string into markup or script, and storage the token must never reach. */
const FORBIDDEN =
  /\.innerHTML|\.outerHTML|insertAdjacentHTML|setHTMLUnsafe|parseHTMLUnsafe|createContextualFragment|DOMParser|srcdoc|document\.write|\beval\(|new Function|localStorage\.|document\.cookie/;

/** The module specifiers of a script's static imports and re-exports (JSDoc `@import` included). */
function importsOf(source: string): string[] {
  return [...source.matchAll(/\b(?:from|import)\s+"([^"]*)"/g)].map((match) => match[1] ?? "");
}

describe("approval console: every static file", () => {
  let sts: TestApp;
  before(async () => {
    sts = await startTestApp({ engine: "pglite" });
  });
  after(async () => {
    await sts.stop();
  });

  test("is served with its type and the page's security headers, and everything the page loads is served", async () => {
    const page = await fetch(`${sts.url}/console`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-security-policy"), CONSOLE_CSP);
    const html = await page.text();

    const onDisk = readdirSync(STATIC_DIR)
      .filter((name) => name !== "index.html")
      .sort();
    assert.ok(onDisk.includes("console.js") && onDisk.length > 5, onDisk.join(", "));

    // The page's scripts, styles and icon, then every module they import, transitively.
    const roots = [...html.matchAll(/\b(?:src|href)="console\/assets\/([^"]+)"/g)].map(
      (match) => match[1] ?? "",
    );
    assert.deepEqual([...roots].sort(), ["console.css", "console.js", "favicon.svg"]);
    const loaded = new Set<string>();
    const queue = [...roots];
    while (queue.length > 0) {
      const name = queue.shift() ?? "";
      if (loaded.has(name)) continue;
      loaded.add(name);
      const asset = await fetch(`${sts.url}/console/assets/${name}`);
      assert.equal(asset.status, 200, name);
      const extension = name.slice(name.lastIndexOf(".") + 1);
      assert.match(asset.headers.get("content-type") ?? "", CONTENT_TYPES[extension] ?? /^$/, name);
      for (const header of SECURITY_HEADERS) {
        assert.ok(page.headers.get(header), header);
        assert.equal(asset.headers.get(header), page.headers.get(header), `${name}: ${header}`);
      }
      assert.equal(asset.headers.get("cache-control"), "no-cache", name);
      const body = await asset.text();
      assert.equal(body, readFileSync(`${STATIC_DIR}${name}`, "utf8"), name);
      if (extension !== "js") continue;
      assert.doesNotMatch(body, FORBIDDEN, name);
      assert.doesNotMatch(body, /\bimport\s*\(/, `${name}: no dynamic import`);
      for (const specifier of importsOf(body)) {
        // Same directory, same origin: the browser asks /console/assets/<name> for it.
        assert.match(specifier, /^\.\/[a-z_]+\.js$/, `${name} imports ${specifier}`);
        queue.push(specifier.slice(2));
      }
    }
    // Nothing in static/ is left unserved or unused.
    assert.deepEqual([...loaded].sort(), onDisk);
  });
});
