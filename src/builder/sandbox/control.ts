/**
 * Signalling the command of a running bwrap sandbox. With a PID namespace bwrap's
 * init (the "child-pid" of its JSON status) stays pid 1 and the command is its
 * child, so a signal meant for the command goes to init's children; without one,
 * the child-pid is the command itself.
 */
import { readFileSync } from "node:fs";
import type { SandboxControl } from "./index.js";

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** bwrap's init forks the command right after it reports its pid: a signal sent in between waits for it (up to ~1 s). */
const WAIT_TRIES = 50;

export function sandboxControl(pid: number, pidns: boolean): SandboxControl {
  const send = (signal: NodeJS.Signals, triesLeft: number) => {
    const targets = pidns ? childrenOf(pid) : [pid];
    if (targets.length === 0 && triesLeft > 0) {
      setTimeout(() => send(signal, triesLeft - 1), 20).unref();
      return;
    }
    for (const t of targets) {
      try {
        process.kill(t, signal);
      } catch {
        // Gone already: nothing to signal.
      }
    }
  };
  return { pid, kill: (signal) => send(signal, WAIT_TRIES) };
}
