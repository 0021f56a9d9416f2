import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

/**
 * The STS's parts (the folders of sts/src, and its top-level files) depend on each other one way: no
 * import cycle between parts, so each can be read, tested and changed from the parts below it. And
 * docs/architecture.md's table of folders says what each part depends on, as the code does.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SOURCE = path.join(ROOT, "sts/src");
const ARCHITECTURE = path.join(ROOT, "docs/architecture.md");

/** The leaf every part may use; edges to it are left out of the graph. */
const SHARED_LEAF = "reasons.ts";

/** A part's imports of other parts: target part → the file edges (`from → to`, under sts/src). */
type PartGraph = Map<string, Map<string, string[]>>;

/** Every `.ts` file under `dir`, relative to {@link SOURCE}. */
function sourceFiles(dir: string = SOURCE): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...sourceFiles(full));
    else if (entry.name.endsWith(".ts")) files.push(path.relative(SOURCE, full));
  }
  return files.sort();
}

/** The part a file under sts/src belongs to: its first folder, or the file itself at the top. */
const partOf = (file: string): string => file.split(path.sep)[0] as string;

/**
 * The graph of parts: for each file, every relative module specifier it imports or re-exports
 * (static, `import type`, dynamic `import()`), read by TypeScript's own pre-processor, mapped to the
 * part it lands in. Edges within a part, to {@link SHARED_LEAF} and out of sts/src are left out.
 */
function partGraph(): PartGraph {
  const graph: PartGraph = new Map();
  for (const file of sourceFiles()) {
    const from = partOf(file);
    if (!graph.has(from)) graph.set(from, new Map());
    const text = readFileSync(path.join(SOURCE, file), "utf8");
    for (const { fileName: specifier } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!specifier.startsWith(".")) continue;
      const target = path.relative(SOURCE, path.resolve(path.dirname(path.join(SOURCE, file)), specifier));
      if (target.startsWith("..")) continue;
      const to = partOf(target.replace(/\.js$/, ".ts"));
      if (to === from || to === SHARED_LEAF) continue;
      const edges = graph.get(from) as Map<string, string[]>;
      const edge = `${file} → ${target.replace(/\.js$/, ".ts")}`;
      if (!edges.get(to)?.includes(edge)) edges.set(to, [...(edges.get(to) ?? []), edge]);
    }
  }
  return graph;
}

/** The strongly connected components of more than one part (Tarjan): each holds a cycle. */
export function cycles(graph: ReadonlyMap<string, ReadonlyMap<string, unknown>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, index.size);
    low.set(node, index.get(node) as number);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node)?.keys() ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node) as number, low.get(next) as number));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node) as number, index.get(next) as number));
      }
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop() as string;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      if (component.length > 1) found.push(component.sort());
    }
  };
  for (const node of [...graph.keys()].sort()) if (!index.has(node)) visit(node);
  return found;
}

/** The file edges between the parts of one cycle, one per line. */
function describeCycle(graph: PartGraph, component: readonly string[]): string {
  const lines = [`cycle between ${component.join(", ")}:`];
  for (const from of component) {
    for (const [to, edges] of graph.get(from) ?? []) {
      if (component.includes(to)) lines.push(...edges.map((edge) => `  ${from} → ${to}: ${edge}`));
    }
  }
  return lines.join("\n");
}

/**
 * The "depends on" column of docs/architecture.md's table of folders, for each row naming a part of
 * sts/src (`sts/src/<folder>/` or `sts/src/<file>.ts`): the part → the parts its cell names in
 * backticks ("nothing": none).
 */
function documentedDependencies(markdown: string): Map<string, string[]> {
  const section = markdown.split(/^## /m).find((part) => part.startsWith("Folders\n"));
  assert.ok(section, "docs/architecture.md has a Folders section");
  const rows = section.split("\n").filter((line) => line.startsWith("|"));
  const header = (rows[0] ?? "").split("|").map((cell) => cell.trim());
  const column = header.indexOf("depends on");
  assert.ok(column > 0, `the Folders table has a "depends on" column: ${rows[0]}`);
  const documented = new Map<string, string[]>();
  for (const row of rows.slice(2)) {
    const cells = row.split("|").map((cell) => cell.trim());
    const name = /^`sts\/src\/([^/`]+)\/?`$/.exec(cells[1] ?? "")?.[1];
    if (name === undefined) continue;
    const cell = cells[column] ?? "";
    documented.set(
      name,
      [...cell.matchAll(/`([^`]+)`/g)].map((match) => (match[1] as string).replace(/\/$/, "")).sort(),
    );
  }
  return documented;
}

describe("the STS's parts", () => {
  test("the folders and top-level files of sts/src import each other without a cycle", () => {
    const graph = partGraph();
    assert.ok(graph.size > 10, `parts found: ${[...graph.keys()].join(", ")}`);
    const found = cycles(graph);
    assert.deepEqual(found, [], found.map((component) => describeCycle(graph, component)).join("\n"));
  });

  test("the cycle check finds a cycle of two parts and of three, and none in a chain", () => {
    const of = (edges: Record<string, string[]>) =>
      new Map(Object.entries(edges).map(([from, to]) => [from, new Map(to.map((part) => [part, []]))]));
    assert.deepEqual(cycles(of({ a: ["b"], b: ["a"], c: ["a"] })), [["a", "b"]]);
    assert.deepEqual(cycles(of({ a: ["b"], b: ["c"], c: ["a"], d: [] })), [["a", "b", "c"]]);
    assert.deepEqual(cycles(of({ a: ["b", "c"], b: ["c"], c: [] })), []);
  });

  test("docs/architecture.md's table names every part with the parts it depends on", () => {
    const graph = partGraph();
    const documented = documentedDependencies(readFileSync(ARCHITECTURE, "utf8"));
    const actual = new Map([...graph].map(([part, edges]) => [part, [...edges.keys()].sort()]));
    assert.deepEqual(
      new Map([...documented].sort(([a], [b]) => a.localeCompare(b))),
      new Map([...actual].sort(([a], [b]) => a.localeCompare(b))),
    );
  });
});
