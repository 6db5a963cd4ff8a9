/** Running the real tools (skopeo, umoci, oci-image-tool) and the CLI in tests. */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { main } from "../../src/cli/main.js";
import { captureIO } from "../dockerfile/cli-io.js";

const pexec = promisify(execFile);

export function have(cmd: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((d) => d !== "" && existsSync(join(d, cmd)));
}

export const isRoot = process.getuid?.() === 0;

export async function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ stdout: string; stderr: string }> {
  return pexec(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, maxBuffer: 64 * 1024 * 1024 });
}

/** Run `ocibuild ARGS` in-process with captured output. */
export async function cli(args: string[], opts: { cwd?: string; env?: Record<string, string | undefined>; stdin?: string } = {}) {
  const cap = captureIO({ cwd: opts.cwd, stdin: opts.stdin });
  cap.io.env = { PATH: process.env.PATH, HOME: process.env.HOME, ...(opts.env ?? {}) };
  const code = await main(args, cap.io);
  return { code, stdout: cap.stdout(), stderr: cap.stderr() };
}
