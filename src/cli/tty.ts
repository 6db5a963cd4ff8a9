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
import { formatBytes, shortDigest, stageLabel } from "./format.js";

/** Receives events; `close()` ends the view (stops timers, leaves the final frame). */
export interface Renderer {
  onEvent(e: BuildEvent): void;
  close(): void;
}

export interface TtyOptions {
  /** Milliseconds clock (default performance.now). */
  now?: () => number;
  /** Spinner/redraw period in ms; false: redraw only on events and tick() (tests). Default 120. */
  interval?: number | false;
  /** RUN output lines kept under a running step (default 3). */
  tailLines?: number;
}

export const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
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

/** The tty renderer; `tick()` advances the spinner and redraws (the timer calls it). */
export function createTtyRenderer(out: NodeJS.WritableStream & { columns?: number }, opts: TtyOptions = {}): Renderer & { tick(): void } {
  const now = opts.now ?? (() => performance.now());
  const tailLines = opts.tailLines ?? 3;
  const steps = new Map<string, ActiveStep>();
  const transfers = new Map<string, Transfer>();
  let pending: string[] = [];
  let drawn = 0;
  let frame = 0;
  let closed = false;

  // A pty without a size (e.g. under script(1)) reports 0 columns: assume 80.
  const width = () => Math.max(20, (out.columns !== undefined && out.columns > 0 ? out.columns : 80) - 1);
  const fit = (line: string) => {
    const chars = [...line.replace(/[\x00-\x1f\x7f]/g, " ")];
    return chars.length > width() ? `${chars.slice(0, width() - 1).join("")}…` : chars.join("");
  };
  const secs = (ms: number) => `${(ms / 1000).toFixed(1)}s`;

  const liveLines = (): string[] => {
    const spin = SPINNER[frame % SPINNER.length]!;
    const t = now();
    const lines: string[] = [];
    for (const s of steps.values()) {
      lines.push(`${spin} ${s.label}  ${secs(t - s.started)}`);
      for (const l of [...s.tail, ...(s.partial ? [s.partial] : [])].slice(-tailLines)) lines.push(`    │ ${l}`);
    }
    for (const x of transfers.values()) {
      const size = x.total !== undefined ? `${formatBytes(x.bytes)} / ${formatBytes(x.total)}` : formatBytes(x.bytes);
      const what = x.action === "layer" ? `writing layer [${x.digest}]` : `${x.action} ${shortDigest(x.digest)}`;
      lines.push(`${spin} ${what}  ${size}  ${rate(x.bytes, t - x.started)}`.trimEnd());
    }
    return lines;
  };

  const render = () => {
    if (closed) return;
    let s = drawn > 0 ? `${UP(drawn)}\r${CLEAR_DOWN}` : "";
    for (const l of pending) s += `${fit(l)}\n`;
    pending = [];
    const live = liveLines();
    for (const l of live) s += `${fit(l)}\n`;
    drawn = live.length;
    if (s) out.write(s);
  };

  const commit = (line: string) => pending.push(line);

  const onEvent = (e: BuildEvent) => {
    const t = now();
    switch (e.type) {
      case "step-start":
        steps.set(`${stageLabel(e)}/${e.step}`, { label: `[${stageLabel(e)} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}${e.type === "step-start" && e.emulated ? " (emulated)" : ""}`, started: t, tail: [], partial: "" });
        break;
      case "step-end": {
        steps.delete(`${stageLabel(e)}/${e.step}`);
        const mark = e.cached ? "CACHED" : secs(e.seconds * 1000);
        commit(`${DONE} [${stageLabel(e)} ${e.step}/${e.total}] ${e.instruction.split("\n")[0]}  ${mark}`);
        break;
      }
      case "output": {
        const s = steps.get(`${stageLabel(e)}/${e.step}`);
        if (!s) break;
        const lines = (s.partial + e.text).split("\n");
        s.partial = lines.pop() ?? "";
        s.tail.push(...lines);
        if (s.tail.length > tailLines) s.tail.splice(0, s.tail.length - tailLines);
        break;
      }
      case "progress": {
        const key = `${e.action}:${e.digest}`;
        if (e.action === "exists" || e.action === "mount") break;
        const x = transfers.get(key) ?? { action: e.action, digest: e.digest, bytes: 0, total: e.total, started: t };
        x.bytes = e.bytes;
        x.total = e.total ?? x.total;
        transfers.set(key, x);
        if (e.action === "pull" && x.total !== undefined && x.bytes >= x.total) {
          transfers.delete(key);
          commit(`${DONE} pulled ${shortDigest(e.digest)}  ${formatBytes(x.bytes)}  ${rate(x.bytes, t - x.started)}`.trimEnd());
        }
        break;
      }
      case "push": {
        const key = `push:${e.digest}`;
        const x = transfers.get(key);
        transfers.delete(key);
        const how = e.status === "uploaded" ? `${formatBytes(e.size)}  ${x ? rate(e.size, t - x.started) : ""}`.trimEnd() : `${formatBytes(e.size)} ${e.status}`;
        commit(`${DONE} pushed ${shortDigest(e.digest)} to ${e.reference}  ${how}`);
        break;
      }
      case "log":
        commit(`${e.level === "warn" ? "warning: " : ""}${e.message}`);
        break;
      case "output-written":
        commit(`${DONE} wrote ${e.reference}`);
        break;
      case "layer-write": {
        const key = `layer:${stageLabel(e)}/${e.step}`;
        const x = transfers.get(key) ?? { action: "layer", digest: `${stageLabel(e)} ${e.step}`, bytes: 0, started: t };
        x.bytes = e.bytes;
        if (e.done) transfers.delete(key);
        else transfers.set(key, x);
        break;
      }
      case "error":
        commit(`error[${e.code}]: ${e.message}`);
        break;
      case "result":
        break;
    }
    // Lines to commit and new steps show at once; the rest (RUN output, transfer bytes,
    // which can come thousands of times a second) waits for the next frame of the timer.
    if (timer === undefined || pending.length > 0 || e.type === "step-start") render();
  };

  const timer = opts.interval === false ? undefined : setInterval(() => tick(), opts.interval ?? 120);
  timer?.unref?.();

  function tick() {
    frame++;
    render();
  }

  return {
    onEvent,
    tick,
    close() {
      if (timer) clearInterval(timer);
      render();
      closed = true;
    },
  };
}
