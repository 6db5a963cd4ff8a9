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

export function sandboxControl(pid: number, pidns: boolean): SandboxControl {
  return {
    pid,
    kill(signal) {
      const targets = pidns ? childrenOf(pid) : [pid];
      for (const t of targets) {
        try {
          process.kill(t, signal);
        } catch {
          // Gone already: nothing to signal.
        }
      }
    },
  };
}
