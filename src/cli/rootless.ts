/**
 * Rootless mode for the commands that need namespaces (build, run): a plain user's
 * command runs again as root of a new user namespace (see userns.ts), with the
 * same arguments, and its exit status is the command's.
 */
import { isOcibuildError } from "../errors.js";
import type { CliIO } from "./io.js";
import { planUserNamespace, runInUserNamespace, USERNS_ENV } from "./userns.js";

export interface RootlessOptions {
  /** Flags that need no namespace (besides --help): the command then runs here. */
  localOnly?: string[];
  /** The command can do without a namespace (build with BuildKit): run it here when none can be made. */
  withoutNamespace?: boolean;
}

/** Returns the re-executed command's exit status, or undefined to run the command in this process. */
export async function reexecRootless(command: string, args: string[], io: CliIO, signal: AbortSignal, opts: RootlessOptions = {}): Promise<number | undefined> {
  if (process.getuid?.() === 0 || io.env[USERNS_ENV] !== undefined) return undefined;
  const local = ["--help", "-h", ...(opts.localOnly ?? [])];
  // Flags only: after "--" come the container command's own arguments.
  const end = args.indexOf("--");
  if ((end < 0 ? args : args.slice(0, end)).some((a) => local.some((l) => a === l || a.startsWith(`${l}=`)))) return undefined;
  const script = process.argv[1];
  if (script === undefined || !/ocibuild(\.c?js)?$/.test(script)) return undefined;
  let plan;
  try {
    plan = planUserNamespace(io.env);
  } catch (e) {
    if (opts.withoutNamespace && isOcibuildError(e) && e.code === "ROOTLESS_UNAVAILABLE") return undefined;
    throw e;
  }
  if (plan.warning !== undefined) io.stderr.write(`warning: ${plan.warning}\n`);
  return runInUserNamespace(plan, [process.execPath, ...process.execArgv, script, command, ...args], withCaCertsMoved(io.env), signal);
}

/**
 * The environment for the command run again: NODE_EXTRA_CA_CERTS moved aside as
 * bin/ocibuild moves it (Node would parse it at start-up; ocibuild reads it itself at
 * its first TLS connection), for bin/ocibuild.cjs to put back.
 */
function withCaCertsMoved(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_EXTRA_CA_CERTS: extra, ...rest } = env;
  return extra ? { ...rest, OCIBUILD_NODE_EXTRA_CA_CERTS: extra } : env;
}
