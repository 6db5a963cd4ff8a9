/**
 * Rendering build events: `plain` (one line per event, for CI logs) and `json`
 * (one JSON object per line, with a `type` field).
 */
import type { BuildEvent } from "../builder/events.js";
import type { BuildResult } from "../builder/build.js";

export type ProgressMode = "plain" | "json" | "quiet";

export function createRenderer(mode: ProgressMode, out: NodeJS.WritableStream): (e: BuildEvent) => void {
  if (mode === "json") return (e) => out.write(`${JSON.stringify(e)}\n`);
  if (mode === "quiet") return () => {};
  const partial = new Map<string, string>();
  return (e) => {
    switch (e.type) {
      case "step-start":
        out.write(`[${e.stage} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}\n`);
        break;
      case "step-end":
        out.write(`[${e.stage} ${e.step}/${e.total}] ${e.cached ? "CACHED" : "DONE"} ${e.seconds.toFixed(2)}s${e.layer ? ` ${e.layer.slice(0, 19)}` : ""}\n`);
        break;
      case "output": {
        const key = `${e.stage}/${e.step}/${e.stream}`;
        const text = (partial.get(key) ?? "") + e.text;
        const lines = text.split("\n");
        partial.set(key, lines.pop() ?? "");
        for (const l of lines) out.write(`[${e.stage} ${e.step}] ${l}\n`);
        break;
      }
      case "log":
        out.write(`${e.level === "warn" ? "warning: " : ""}${e.message}\n`);
        break;
      case "push":
        out.write(`push ${e.reference} ${e.digest.slice(0, 19)} ${e.status}\n`);
        break;
      case "result":
        break;
    }
  };
}

/** The end-of-build summary: references with digest, size, and the per-step report. */
export function summary(result: BuildResult): string {
  const lines: string[] = [];
  lines.push(`digest: ${result.digest}`);
  for (const r of result.references) lines.push(`image: ${r}`);
  lines.push(`size: ${formatBytes(result.size)}`);
  const cached = result.steps.filter((s) => s.cached).length;
  lines.push(`steps: ${result.steps.length}, cached: ${cached}/${result.steps.length}`);
  for (const s of result.steps) {
    const status = s.cached ? "CACHED" : "BUILT ";
    const why = s.cached ? "" : ` (${s.reason ?? "no cache entry"})`;
    lines.push(`  ${status} [${s.stage}] line ${s.line}: ${s.instruction}${why} ${s.seconds.toFixed(2)}s`);
  }
  return `${lines.join("\n")}\n`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}
