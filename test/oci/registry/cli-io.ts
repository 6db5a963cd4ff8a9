/** A CliIO that captures what a command writes. */
import { PassThrough, Writable } from "node:stream";
import type { CliIO } from "../../../src/cli/io.js";

export interface Captured {
  io: CliIO;
  out(): string;
  outBytes(): Buffer;
  err(): string;
}

export function captureIO(env: Record<string, string | undefined> = {}, cwd = process.cwd()): Captured {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const sink = (into: Buffer[]) =>
    new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        into.push(Buffer.from(chunk));
        cb();
      },
    });
  const io: CliIO = { stdout: sink(out), stderr: sink(err), stdin: new PassThrough(), env, cwd };
  return {
    io,
    out: () => Buffer.concat(out).toString("utf8"),
    outBytes: () => Buffer.concat(out),
    err: () => Buffer.concat(err).toString("utf8"),
  };
}
