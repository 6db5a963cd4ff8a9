/**
 * The live terminal view (`--progress=tty`, the default on a terminal).
 *
 * The screen has two parts: finished lines above (one per finished step, with
 * CACHED or its time; one per pushed or pulled blob, with its size and rate;
 * warnings), written once and never touched again, and a live area below that
 * is redrawn in place: a spinner line per running step with its elapsed time
 * and the last lines of its RUN output, and a line per blob in transfer with
 * bytes, total and rate. Redrawing moves the cursor up over the live area,
 * clears to the end of the screen and writes it again; lines are cut to the
 * terminal width so none wraps (a wrapped line would break the count).
 *
 * Time comes from an injectable clock and the spinner from an injectable
 * interval, so tests drive it deterministically with a fake TTY stream.
 */
import type { BuildEvent } from "../builder/events.js";
import { flagWording } from "./errors.js";
import { monotonicMs } from "../clock.js";
import { formatBytes, shortDigest, stageLabel } from "./format.js";

/** Receives events; `close()` ends the view (stops timers, leaves the final frame). */
export interface Renderer {
  onEvent(e: BuildEvent): void;
  close(): void;
}

export interface TtyOptions {
  /** Milliseconds clock (default a monotonic clock). */
  now?: () => number;
  /** Spinner/redraw period in ms; false: redraw only on events and tick() (tests). Default 120. */
  interval?: number | false;
  /** RUN output lines kept under a running step (default 3). */
  tailLines?: number;
}

export const SPINNER: readonly string[] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
const DONE = "✔";
const UP = (n: number) => `\x1b[${n}A`;
const CLEAR_DOWN = "\x1b[0J";

interface ActiveStep {
  label: string;
  started: number;
  tail: string[];
  partial: string;
}

interface Transfer {
  action: string;
  digest: string;
  bytes: number;
  total?: number;
  started: number;
}

function rate(bytes: number, ms: number): string {
  return ms > 0 ? `${formatBytes(Math.round((bytes * 1000) / ms))}/s` : "";
}

/** A FROM step's finished mark: what was pulled of its base, or how it was resolved. */
function fromMark(e: Extract<BuildEvent, { type: "step-end" }>): string {
  if (e.pulledBytes) return `pulled ${formatBytes(e.pulledBytes)}  ${secs(e.seconds * 1000)}`;
  return e.resolved === "cache" ? "resolved from cache" : `resolved  ${secs(e.seconds * 1000)}`;
}

/** The tty renderer; `tick()` advances the spinner and redraws (the timer calls it). */
export function createTtyRenderer(out: TtyStream, opts: TtyOptions = {}): Renderer & { tick(): void } {
  return new TtyRenderer(out, opts);
}

type TtyStream = NodeJS.WritableStream & { columns?: number };

const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

/** The finished lines waiting to be written, the live area's state, and how many lines of it are on screen. */
class TtyRenderer implements Renderer {
  private readonly now: () => number;
  private readonly tailLines: number;
  private readonly steps = new Map<string, ActiveStep>();
  private readonly transfers = new Map<string, Transfer>();
  private readonly timer: ReturnType<typeof setInterval> | undefined;
  private pending: string[] = [];
  private drawn = 0;
  private frame = 0;
  private closed = false;

  constructor(
    private readonly out: TtyStream,
    opts: TtyOptions,
  ) {
    this.now = opts.now ?? monotonicMs;
    this.tailLines = opts.tailLines ?? 3;
    this.timer = opts.interval === false ? undefined : setInterval(() => this.tick(), opts.interval ?? 120);
    this.timer?.unref?.();
  }

  onEvent(e: BuildEvent): void {
    const t = this.now();
    switch (e.type) {
      case "step-start":
        this.steps.set(`${stageLabel(e)}/${e.step}`, { label: `[${stageLabel(e)} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}${e.emulated ? " (emulated)" : ""}`, started: t, tail: [], partial: "" });
        break;
      case "step-end": {
        this.steps.delete(`${stageLabel(e)}/${e.step}`);
        const mark = e.resolved ? fromMark(e) : e.cached ? "CACHED" : secs(e.seconds * 1000);
        this.commit(`${DONE} [${stageLabel(e)} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}  ${mark}`);
        break;
      }
      case "output":
        this.output(e);
        break;
      case "progress":
        this.progress(e, t);
        break;
      case "push":
        this.pushed(e, t);
        break;
      case "log":
        this.commit(`${e.level === "warn" ? "warning: " : ""}${flagWording(e.message)}`);
        break;
      case "output-written":
        this.commit(`${DONE} wrote ${e.reference}`);
        break;
      case "layer-write":
        this.layerWrite(e, t);
        break;
      case "error":
        this.commit(`error[${e.code}]: ${e.message}`);
        break;
      case "result":
        break;
    }
    // Lines to commit and new steps show at once; the rest (RUN output, transfer bytes,
    // which can come thousands of times a second) waits for the next frame of the timer.
    if (this.timer === undefined || this.pending.length > 0 || e.type === "step-start") this.render();
  }

  tick(): void {
    this.frame++;
    this.render();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.render();
    this.closed = true;
  }

  /** RUN output: whole lines into the step's tail (the last `tailLines` kept), the unfinished one apart. */
  private output(e: Extract<BuildEvent, { type: "output" }>): void {
    const s = this.steps.get(`${stageLabel(e)}/${e.step}`);
    if (!s) return;
    const lines = (s.partial + e.text).split("\n");
    s.partial = lines.pop() ?? "";
    s.tail.push(...lines);
    if (s.tail.length > this.tailLines) s.tail.splice(0, s.tail.length - this.tailLines);
  }

  /** A blob's bytes so far; a finished pull becomes a finished line. */
  private progress(e: Extract<BuildEvent, { type: "progress" }>, t: number): void {
    const key = `${e.action}:${e.digest}`;
    if (e.action === "exists" || e.action === "mount") return;
    const x = this.transfers.get(key) ?? { action: e.action, digest: e.digest, bytes: 0, total: e.total, started: t };
    x.bytes = e.bytes;
    x.total = e.total ?? x.total;
    this.transfers.set(key, x);
    if (e.action === "pull" && x.total !== undefined && x.bytes >= x.total) {
      this.transfers.delete(key);
      this.commit(`${DONE} pulled ${shortDigest(e.digest)}  ${formatBytes(x.bytes)}  ${rate(x.bytes, t - x.started)}`.trimEnd());
    }
  }

  private pushed(e: Extract<BuildEvent, { type: "push" }>, t: number): void {
    const key = `push:${e.digest}`;
    const x = this.transfers.get(key);
    this.transfers.delete(key);
    const how = e.status === "uploaded" ? `${formatBytes(e.size)}  ${x ? rate(e.size, t - x.started) : ""}`.trimEnd() : `${formatBytes(e.size)} ${e.status}`;
    this.commit(`${DONE} pushed ${shortDigest(e.digest)} to ${e.reference}  ${how}`);
  }

  private layerWrite(e: Extract<BuildEvent, { type: "layer-write" }>, t: number): void {
    const key = `layer:${stageLabel(e)}/${e.step}`;
    const x = this.transfers.get(key) ?? { action: "layer", digest: `${stageLabel(e)} ${e.step}`, bytes: 0, started: t };
    x.bytes = e.bytes;
    if (e.done) this.transfers.delete(key);
    else this.transfers.set(key, x);
  }

  private commit(line: string): void {
    this.pending.push(line);
  }

  /** Move up over the live area, clear it, write the pending finished lines and the live area anew. */
  private render(): void {
    if (this.closed) return;
    let s = this.drawn > 0 ? `${UP(this.drawn)}\r${CLEAR_DOWN}` : "";
    for (const l of this.pending) s += `${this.fit(l)}\n`;
    this.pending = [];
    const live = this.liveLines();
    for (const l of live) s += `${this.fit(l)}\n`;
    this.drawn = live.length;
    if (s) this.out.write(s);
  }

  /** A spinner line per running step with the tail of its output, and one per blob in transfer. */
  private liveLines(): string[] {
    const spin = SPINNER[this.frame % SPINNER.length]!;
    const t = this.now();
    const lines: string[] = [];
    for (const s of this.steps.values()) {
      lines.push(`${spin} ${s.label}  ${secs(t - s.started)}`);
      for (const l of [...s.tail, ...(s.partial ? [s.partial] : [])].slice(-this.tailLines)) lines.push(`    │ ${l}`);
    }
    for (const x of this.transfers.values()) {
      const size = x.total !== undefined ? `${formatBytes(x.bytes)} / ${formatBytes(x.total)}` : formatBytes(x.bytes);
      const what = x.action === "layer" ? `writing layer [${x.digest}]` : `${x.action} ${shortDigest(x.digest)}`;
      lines.push(`${spin} ${what}  ${size}  ${rate(x.bytes, t - x.started)}`.trimEnd());
    }
    return lines;
  }

  /** `line` with control characters blanked, cut to the terminal's width so that it never wraps. */
  private fit(line: string): string {
    // A pty without a size (e.g. under script(1)) reports 0 columns: assume 80.
    const columns = this.out.columns !== undefined && this.out.columns > 0 ? this.out.columns : 80;
    const width = Math.max(20, columns - 1);
    const chars = [...line.replace(/[\x00-\x1f\x7f]/g, " ")];
    return chars.length > width ? `${chars.slice(0, width - 1).join("")}…` : chars.join("");
  }
}
