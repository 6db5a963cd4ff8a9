/**
 * How a running container is stopped, as `docker stop` does it: the stop signal
 * (the abort reason's `signal`, else the image's StopSignal, else SIGTERM) to the
 * command, then SIGKILL to the sandbox after a grace period. Triggered by the
 * caller's AbortSignal, by the timeout, or by a finished health check.
 */
import { constants as osConstants } from "node:os";
import type { SandboxControl } from "../builder/sandbox/index.js";

export class Stopper {
  private readonly killer = new AbortController();
  private control?: SandboxControl;
  private stopping = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly onAbort: () => void;
  timedOut = false;
  startedAt?: number;

  constructor(
    private readonly stopSignal: string | undefined,
    private readonly graceMs: number,
    private readonly signal: AbortSignal | undefined,
    timeoutSeconds: number | undefined,
  ) {
    this.onAbort = () => this.stop(signalOf(signal?.reason));
    if (signal?.aborted) this.killer.abort(signal.reason);
    signal?.addEventListener("abort", this.onAbort, { once: true });
    if (timeoutSeconds !== undefined) {
      this.timers.push(
        setTimeout(() => {
          this.timedOut = true;
          this.stop();
        }, timeoutSeconds * 1000),
      );
    }
  }

  /** Aborted when the sandbox must be killed outright (the executor's signal). */
  get kill(): AbortSignal {
    return this.killer.signal;
  }

  started(control: SandboxControl): void {
    this.control = control;
    this.startedAt = Date.now();
    if (this.stopping) {
      this.stopping = false;
      this.stop();
    }
  }

  /** Ask the command to stop; kill the sandbox if it has not after the grace period. */
  stop(sig?: string): void {
    if (this.control === undefined) {
      // Not started yet: nothing to ask, the executor is told to give up.
      this.stopping = true;
      if (this.signal?.aborted) this.killer.abort(this.signal.reason);
      return;
    }
    this.control.kill(normalise(sig ?? this.stopSignal ?? "SIGTERM"));
    if (this.stopping) return;
    this.stopping = true;
    this.timers.push(setTimeout(() => this.killer.abort(new Error("stop timeout")), this.graceMs));
  }

  dispose(): void {
    for (const t of this.timers) clearTimeout(t);
    this.signal?.removeEventListener("abort", this.onAbort);
  }
}

function signalOf(reason: unknown): string | undefined {
  const s = (reason as { signal?: unknown } | undefined)?.signal;
  return typeof s === "string" ? s : undefined;
}

/** "TERM", "SIGTERM" or "15" as Docker's StopSignal takes it. */
function normalise(sig: string): NodeJS.Signals {
  if (/^\d+$/.test(sig)) {
    const signals = osConstants.signals as Record<string, number>;
    const name = Object.keys(signals).find((k) => signals[k] === Number(sig));
    return (name ?? "SIGTERM") as NodeJS.Signals;
  }
  const up = sig.toUpperCase();
  return (up.startsWith("SIG") ? up : `SIG${up}`) as NodeJS.Signals;
}
