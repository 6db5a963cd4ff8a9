import { OcibuildError } from "../errors.js";

/** What a command writes to; injected so tests can capture it. */
export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stdin: NodeJS.ReadableStream;
  env: Record<string, string | undefined>;
  cwd: string;
}

/**
 * This process's streams. stdin is a getter: `process.stdin` constructs its stream (a
 * socket, a tty or a file stream, ~3 ms of a fully cached build) on first use, and only
 * `-`, `-f -` and `run -i` read it.
 */
export function processIO(): CliIO {
  quietOnClosedPipe(process.stdout);
  quietOnClosedPipe(process.stderr);
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    get stdin() {
      return process.stdin;
    },
    env: process.env,
    cwd: process.cwd(),
  };
}

/**
 * A reader that goes away (`ocibuild ... | head`) makes the next write fail with EPIPE,
 * an 'error' event that would end the process with a stack trace. What is written there
 * is the command's report, not its work: the writes stop being seen and the command
 * goes on to its own end and exit status, as it does when nobody reads a file it writes to.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE" && e.code !== "ERR_STREAM_DESTROYED") throw e;
  });
}

/** A command: parses its own arguments, returns an exit code, throws OcibuildError on failure. */
export type Command = (args: string[], io: CliIO, signal: AbortSignal) => Promise<number>;

/** All of stdin (`-f -`, `parse -`); abortable; a read error is DOCKERFILE_READ. */
export async function readStdin(io: CliIO, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stream = io.stdin;
  await new Promise<void>((resolvePromise, reject) => {
    const onAbort = () => {
      cleanup();
      reject(signal?.reason instanceof Error ? signal.reason : new Error("aborted"));
    };
    const onData = (c: Buffer | string) => chunks.push(typeof c === "string" ? Buffer.from(c) : c);
    const onEnd = () => {
      cleanup();
      resolvePromise();
    };
    const onError = (e: Error) => {
      cleanup();
      reject(new OcibuildError("DOCKERFILE_READ", `cannot read stdin: ${e.message}`, { cause: e }));
    };
    const cleanup = () => {
      signal?.removeEventListener("abort", onAbort);
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", onError);
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", onError);
  });
  return Buffer.concat(chunks);
}
