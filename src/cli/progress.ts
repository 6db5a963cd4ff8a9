/**
 * Rendering build events: `plain` (one line per event, for CI logs), `json`
 * (one JSON object per line, each a BuildEvent), `tty` (a live view, see
 * tty.ts) and `quiet`. `auto` is tty when the progress stream is a terminal.
 */
import type { BuildResult } from "../builder/build.js";
import { flagWording } from "./errors.js";
import { formatBytes, shortDigest, stageLabel } from "./format.js";
import { createTtyRenderer, type TtyOptions } from "./tty.js";

export { formatBytes, shortDigest };

export type ProgressMode = "plain" | "json" | "tty" | "quiet";

export type { Renderer } from "./tty.js";
import type { Renderer } from "./tty.js";

type Stream = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/** `--progress` to a mode: auto picks tty when `out` is a terminal, plain otherwise. */
export function resolveProgressMode(requested: string, out: Stream, quiet = false): ProgressMode {
  if (quiet) return "quiet";
  if (requested === "auto") return out.isTTY === true ? "tty" : "plain";
  return requested as ProgressMode;
}

/** One line per event; RUN output prefixed with its step, split on newlines (partial lines held). */
function plainRenderer(out: Stream): Renderer {
  const partial = new Map<string, string>();
  const flush = (key: string, prefix: string) => {
    const rest = partial.get(key);
    if (rest) out.write(`${prefix} ${rest}\n`);
    partial.delete(key);
  };
  return {
    onEvent(e) {
      switch (e.type) {
        case "step-start":
          out.write(`[${stageLabel(e)} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}${e.type === "step-start" && e.emulated ? " (emulated)" : ""}\n`);
          break;
        case "step-end": {
          for (const s of ["stdout", "stderr"]) flush(`${stageLabel(e)}/${e.step}/${s}`, `[${stageLabel(e)} ${e.step}]`);
          // A FROM step (resolved) always says how its base was resolved and what was pulled.
          const why = (!e.cached || e.resolved) && e.reason ? ` (${flagWording(e.reason)})` : "";
          out.write(`[${stageLabel(e)} ${e.step}/${e.total}] ${e.cached ? "CACHED" : "DONE"} ${e.seconds.toFixed(2)}s${e.layer ? ` layer ${shortDigest(e.layer)}` : ""}${why}\n`);
          break;
        }
        case "output": {
          const key = `${stageLabel(e)}/${e.step}/${e.stream}`;
          const lines = ((partial.get(key) ?? "") + e.text).split("\n");
          partial.set(key, lines.pop() ?? "");
          for (const l of lines) out.write(`[${stageLabel(e)} ${e.step}] ${l}\n`);
          break;
        }
        case "log":
          out.write(`${e.level === "warn" ? "warning: " : ""}${flagWording(e.message)}\n`);
          break;
        case "push":
          out.write(`push ${e.reference} ${shortDigest(e.digest)} ${e.status} ${formatBytes(e.size)}\n`);
          break;
        case "output-written":
          out.write(`wrote ${e.reference}\n`);
          break;
        case "error":
          out.write(`error[${e.code}]: ${e.message}\n`);
          break;
        case "progress":
        case "layer-write":
        case "result":
          break;
      }
    },
    close() {
      for (const [key, rest] of partial) if (rest) out.write(`[${key.split("/").slice(0, 2).join(" ")}] ${rest}\n`);
      partial.clear();
    },
  };
}

/**
 * One JSON line per event. The lines of the events of one turn of the event loop are
 * written together at its end (setImmediate): a fully cached build's hundred events
 * were a hundred writes (~1 ms). close() writes what is left at once.
 */
function jsonRenderer(out: Stream): Renderer {
  let pending = "";
  let timer: NodeJS.Immediate | undefined;
  const flush = () => {
    if (timer) clearImmediate(timer);
    timer = undefined;
    if (pending === "") return;
    const text = pending;
    pending = "";
    out.write(text);
  };
  return {
    onEvent: (e) => {
      pending += `${JSON.stringify(e)}\n`;
      timer ??= setImmediate(flush);
    },
    close: flush,
  };
}

/** A renderer for `mode` writing to `out`. */
export function createRenderer(mode: ProgressMode, out: Stream, tty: TtyOptions = {}): Renderer {
  switch (mode) {
    case "json":
      return jsonRenderer(out);
    case "quiet":
      return { onEvent() {}, close() {} };
    case "tty":
      return createTtyRenderer(out, tty);
    case "plain":
      return plainRenderer(out);
  }
}

/** Cache hits, total steps, seconds and bytes saved, as the builder counted them. */
export function cacheSummary(result: BuildResult): { hits: number; misses: number; total: number; secondsSaved: number; bytesReused: number } {
  const c = result.cache;
  return { hits: c.hits, misses: c.misses, total: c.hits + c.misses, secondsSaved: c.secondsSaved, bytesReused: c.bytesReused };
}

/** The end-of-build summary: references with digest, size, cache hits and time saved, and the per-step report. */
export function summary(result: BuildResult): string {
  const lines: string[] = [];
  lines.push(`digest: ${result.digest}`);
  for (const r of result.references) lines.push(`image: ${r}`);
  lines.push(`size: ${formatBytes(result.size)}`);
  const c = cacheSummary(result);
  const saved = c.hits > 0 ? `, time saved: ${c.secondsSaved.toFixed(1)}s, reused: ${formatBytes(c.bytesReused)}` : "";
  const bases = result.steps.filter((s) => s.base).length;
  lines.push(`steps: ${result.steps.length - bases}${bases > 0 ? ` (and ${bases} FROM)` : ""}, cached: ${c.hits}/${c.total}${saved}`);
  for (const s of result.steps) {
    const status = s.base ? "BASE  " : s.cached ? "CACHED" : "BUILT ";
    const why = s.cached && !s.base ? "" : ` (${flagWording(s.reason ?? "no cache entry")})`;
    lines.push(`  ${status} [${stageLabel(s)}] line ${s.line}: ${s.instruction}${why} ${s.seconds.toFixed(2)}s`);
  }
  return `${lines.join("\n")}\n`;
}

/** The `--dry-run` report: what would be cached and what rebuilt, with the reason for each rebuild. */
export function dryRunSummary(result: BuildResult): string {
  const c = cacheSummary(result);
  const lines = [`dry run: ${c.hits}/${c.total} steps would be cached, ${c.misses} rebuilt`];
  for (const s of result.steps) {
    const status = s.base ? "BASE   " : s.cached ? "CACHED " : "REBUILD";
    lines.push(`  ${status} [${stageLabel(s)}] line ${s.line}: ${s.instruction}${s.cached && !s.base ? "" : ` (${flagWording(s.reason ?? "no previous entry")})`}`);
  }
  if (result.digest) lines.push(`digest (everything cached): ${result.digest}`);
  return `${lines.join("\n")}\n`;
}
