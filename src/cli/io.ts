/** What a command writes to; injected so tests can capture it. */
export interface CliIO {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stdin: NodeJS.ReadableStream;
  env: Record<string, string | undefined>;
  cwd: string;
}

export function processIO(): CliIO {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env, cwd: process.cwd() };
}

/** A command: parses its own arguments, returns an exit code, throws OcibuildError on failure. */
export type Command = (args: string[], io: CliIO, signal: AbortSignal) => Promise<number>;
