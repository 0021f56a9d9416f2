import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

/**
 * The repository's own documents are the whole story for its users: nothing points to text they
 * cannot see (a team-internal document), and every relative Markdown link
 * resolves, anchors into docs/reference.md included.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Every tracked file, relative to the root. */
function trackedFiles(): string[] {
  return execFileSync("git", ["ls-files", "-z"], { cwd: ROOT, encoding: "utf8" })
    .split("\0")
    .filter((file) => file !== "" && existsSync(path.join(ROOT, file)));
}

/** Changelog-like text under docs/ may name what the project once pointed to. */
const isChangelog = (file: string) => /^docs\/.*(changelog|history|changes)[^/]*$/i.test(file);

/** What no user-facing file may name (built from parts, so this file does not name it either). */
const FORBIDDEN: ReadonlyArray<[string, RegExp]> = [
  ["the contract file", new RegExp(["CONTRACT", "\\.md"].join(""), "i")],
  ["a contract section", new RegExp(["CONTRACT", " §"].join(""))],
  ["the team folder", new RegExp(["shared", "\\s+folder"].join(""), "i")],
  ["the team folder's path", new RegExp(["/work", "/shared"].join(""))],
];

/** Files whose relative links are checked. */
function linkedDocuments(files: readonly string[]): string[] {
  return files.filter(
    (file) =>
      ["README.md", "SECURITY.md", "BENCHMARKS.md", "gateway-verifier/README.md"].includes(file) ||
      /^docs\/[^/]+\.md$/.test(file) ||
      /^examples\/.+\.md$/.test(file),
  );
}

/** Markdown without fenced code blocks and inline code spans (links there are not links). */
function withoutCode(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "").replace(/`[^`\n]*`/g, "");
}

/** The targets of inline links `[text](target)`, images included, and of reference definitions. */
export function linkTargets(markdown: string): string[] {
  const text = withoutCode(markdown);
  const targets: string[] = [];
  for (const match of text.matchAll(/\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+"[^"]*")?\s*\)/g)) {
    targets.push((match[1] as string).replace(/^<|>$/g, ""));
  }
  for (const match of text.matchAll(/^\s{0,3}\[[^\]]+\]:\s*(\S+)/gm)) targets.push(match[1] as string);
  return targets;
}

/** GitHub's heading anchors: lowercase, punctuation dropped, spaces as hyphens, repeats numbered. */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  const text = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, "");
  for (const match of text.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const plain = (match[1] as string).replace(/\[([^\]]*)\]\([^)]*\)/g, "$1").replace(/[`*]/g, "");
    const base = plain
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\s-]/gu, "")
      .replace(/\s/g, "-");
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

const REFERENCE = "docs/reference.md";

describe("references in the repository", () => {
  const files = trackedFiles();

  test("no tracked file points to the team's contract file, its sections or the team folder", () => {
    assert.ok(files.includes(REFERENCE) && files.length > 100, "git ls-files lists the repository");
    const found: string[] = [];
    for (const file of files) {
      if (isChangelog(file) || statSync(path.join(ROOT, file)).size > 5_000_000) continue;
      const content = readFileSync(path.join(ROOT, file));
      if (content.includes(0)) continue; // binary
      const text = content.toString("utf8");
      for (const [what, pattern] of FORBIDDEN) {
        const line = text.split("\n").findIndex((candidate) => pattern.test(candidate));
        if (line >= 0) found.push(`${file}:${line + 1} names ${what}`);
      }
    }
    assert.deepEqual(found, []);
  });

  test("the check finds each forbidden name", () => {
    const samples = [
      ["see ", "CONTRACT", ".md"].join(""),
      ["(", "CONTRACT", " §3)"].join(""),
      ["in the team's ", "shared", " folder"].join(""),
      ["/work", "/shared/DESIGN.md"].join(""),
    ];
    samples.forEach((sample, i) => {
      assert.ok((FORBIDDEN[i] as [string, RegExp])[1].test(sample), sample);
    });
    assert.ok(!FORBIDDEN.some(([, pattern]) => pattern.test("a contract of the Apache License")));
  });

  test("every relative Markdown link resolves, and every anchor into docs/reference.md is a heading", () => {
    const documents = linkedDocuments(files);
    for (const expected of ["README.md", "SECURITY.md", REFERENCE, "gateway-verifier/README.md"]) {
      assert.ok(documents.includes(expected), expected);
    }
    const referenceAnchors = headingAnchors(readFileSync(path.join(ROOT, REFERENCE), "utf8"));
    const broken: string[] = [];
    for (const document of documents) {
      for (const target of linkTargets(readFileSync(path.join(ROOT, document), "utf8"))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
        const [pathPart = "", anchor] = target.split("#", 2);
        const resolved =
          pathPart === ""
            ? document
            : path.posix.normalize(
                path.posix.join(path.posix.dirname(document), decodeURIComponent(pathPart)),
              );
        if (resolved.startsWith("..") || !existsSync(path.join(ROOT, resolved))) {
          broken.push(`${document}: ${target} (no such file)`);
          continue;
        }
        if (anchor !== undefined && resolved === REFERENCE && !referenceAnchors.has(anchor)) {
          broken.push(`${document}: ${target} (no such heading)`);
        }
      }
    }
    assert.deepEqual(broken, []);
  });

  test("the link check reads links and anchors the way GitHub renders them", () => {
    assert.deepEqual(
      linkTargets('[a](x.md) `[b](not.md)` ![c](<img one.png> "t")\n```\n[d](no.md)\n```\n[e]: ref.md#h'),
      ["x.md", "img one.png", "ref.md#h"],
    );
    const anchors = headingAnchors(
      "# Countersign reference\n## Agent credentials: client_credentials\n### `POST /approvals/{id}/approve`\n## Token exchange\n## Token exchange\n",
    );
    assert.deepEqual(
      [...anchors],
      [
        "countersign-reference",
        "agent-credentials-client_credentials",
        "post-approvalsidapprove",
        "token-exchange",
        "token-exchange-1",
      ],
    );
  });
});
