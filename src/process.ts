/**
 * Running a short-lived host program to its end and collecting what it printed
 * (mount, mknod, tar, git, ssh-add, a credential helper, bwrap's probes). Programs
 * that stay alive or whose output is streamed (RUN's sandbox, slirp4netns, agents,
 * decompressors) spawn their own children.
 */
import { childProcess } from "./builtins.js";

export interface RunProcessOptions {
  cwd?: string;
  /** The child's whole environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  input?: string | Buffer;
  /** Aborting kills the child (SIGTERM) and rejects with the AbortError, as spawn's own option. */
  signal?: AbortSignal;
  /** Bytes kept of each of stdout and stderr; the rest is read and dropped. Default 1 MiB. */
  maxOutput?: number;
}

export interface ProcessResult {
  /** Exit status, null when a signal ended the child. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export const DEFAULT_MAX_OUTPUT = 1024 * 1024;

/** A stream's first `max` bytes, kept as they come and decoded (UTF-8) once it ends. */
function sink(max: number): { add: (d: Buffer) => void; text: () => string } {
  const parts: Buffer[] = [];
  let kept = 0;
  return {
    add: (d) => {
      if (kept >= max) return;
      const part = d.length > max - kept ? d.subarray(0, max - kept) : d;
      parts.push(part);
      kept += part.length;
    },
    text: () => Buffer.concat(parts).toString("utf8"),
  };
}

/**
 * Run `cmd` with `args` to its end. Resolves with its exit status or signal and its
 * output, whatever the status; rejects only when it cannot be started (the spawn
 * error, e.g. ENOENT) or when `signal` aborts it.
 */
export function runProcess(cmd: string, args: readonly string[], opts: RunProcessOptions = {}): Promise<ProcessResult> {
  const max = opts.maxOutput ?? DEFAULT_MAX_OUTPUT;
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      signal: opts.signal,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    const out = sink(max);
    const err = sink(max);
    child.stdout!.on("data", out.add);
    child.stderr!.on("data", err.add);
    child.on("error", reject);
    child.on("close", (code, sig) => resolve({ code, signal: sig, stdout: out.text(), stderr: err.text() }));
    if (child.stdin) {
      // A child that exits without reading its input: EPIPE here is not the caller's failure.
      child.stdin.on("error", () => {});
      child.stdin.end(opts.input);
    }
  });
}
