/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): the top functions by self time, as a markdown
 * table. `npx tsx bench/exchange/profile_summary.ts <file.cpuprofile> [top]`.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the samples. */
export interface ProfileEntry {
  readonly name: string;
  readonly where: string;
  readonly selfMs: number;
  readonly selfPercent: number;
}

function where(url: string, line: number): string {
  if (!url) return "(native)";
  const marker = "node_modules/";
  const index = url.lastIndexOf(marker);
  const short = index >= 0 ? url.slice(index + marker.length) : url.replace(/^file:\/\/.*?\/main\//, "");
  return `${short}:${line + 1}`;
}

/** The top `top` functions by self time, and the share spent idle / in GC. */
export function summariseProfile(file: string, top = 20): { entries: ProfileEntry[]; totalMs: number } {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const grouped = new Map<string, { name: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    const name = node.callFrame.functionName || "(anonymous)";
    const at = where(node.callFrame.url, node.callFrame.lineNumber);
    const key = `${name}@${at}`;
    const entry = grouped.get(key) ?? { name, where: at, us: 0 };
    entry.us += us;
    grouped.set(key, entry);
  }
  const totalUs = [...grouped.values()].reduce((sum, entry) => sum + entry.us, 0);
  const busyUs = totalUs - ([...grouped.values()].find((entry) => entry.name === "(idle)")?.us ?? 0);
  const entries = [...grouped.values()]
    .filter((entry) => entry.name !== "(idle)")
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((entry) => ({
      name: entry.name,
      where: entry.where,
      selfMs: entry.us / 1000,
      selfPercent: (100 * entry.us) / busyUs,
    }));
  return { entries, totalMs: busyUs / 1000 };
}

/** The summary as a markdown table (share of the non-idle samples). */
export function profileMarkdown(file: string, top = 20): string {
  const { entries, totalMs } = summariseProfile(file, top);
  const rows = entries.map(
    (entry) =>
      `| ${entry.selfPercent.toFixed(1)} % | ${entry.selfMs.toFixed(0)} | \`${entry.name}\` | ${entry.where} |`,
  );
  return [
    `Busy (non-idle) samples: ${totalMs.toFixed(0)} ms.`,
    "",
    "| self % | self ms | function | where |",
    "| ---: | ---: | --- | --- |",
    ...rows,
  ].join("\n");
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) throw new Error("usage: profile_summary.ts <file.cpuprofile> [top]");
  process.stdout.write(`${profileMarkdown(file, Number(process.argv[3] ?? 25))}\n`);
}
