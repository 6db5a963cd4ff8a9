/** An in-memory CliIO for calling `main` without spawning the binary. */
import { PassThrough, Readable } from "node:stream";
import type { CliIO } from "../../src/cli/io.js";

export interface CapturedIO {
  io: CliIO;
  stdout(): string;
  stderr(): string;
}

export function captureIO(opts: { stdin?: string | Buffer; cwd?: string } = {}): CapturedIO {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on("data", (c: Buffer) => out.push(c));
  stderr.on("data", (c: Buffer) => err.push(c));
  const stdin = Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]);
  return {
    io: { stdout, stderr, stdin, env: {}, cwd: opts.cwd ?? process.cwd() },
    stdout: () => Buffer.concat(out).toString("utf8"),
    stderr: () => Buffer.concat(err).toString("utf8"),
  };
}
