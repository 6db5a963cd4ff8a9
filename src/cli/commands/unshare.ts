/**
 * `ocibuild unshare [--] [COMMAND ARGS...]`: run a command (default: $SHELL) in
 * the user namespace a rootless build uses, as root there with the same id maps,
 * as `podman unshare` and `buildah unshare` do. For removing a rootless cache
 * directory (files there belong to subordinate ids), inspecting it, or running a
 * program that calls the library's build() as a plain user.
 */
import { OcibuildError } from "../../errors.js";
import { helpText, type FlagSpec } from "../flags.js";
import type { Command } from "../io.js";
import { planUserNamespace, runInUserNamespace, USERNS_ENV } from "../userns.js";

const USAGE = "Usage: ocibuild unshare [--] [COMMAND [ARGS...]]";
const SPECS: FlagSpec[] = [];
const EXAMPLES = [
  "ocibuild unshare rm -rf ~/.cache/ocibuild      # remove a rootless cache",
  "ocibuild unshare -- node build.mjs             # a program that calls the library's build()",
];

export const unshareCommand: Command = async (args, io, signal) => {
  if (args[0] === "--help" || args[0] === "-h") {
    io.stdout.write(helpText(USAGE, SPECS, EXAMPLES));
    return 0;
  }
  const command = args[0] === "--" ? args.slice(1) : args;
  if (process.getuid?.() === 0 || io.env[USERNS_ENV] !== undefined) {
    throw new OcibuildError("USAGE_BAD_VALUE", "ocibuild unshare is for plain users: this process is already root (of the host or of a user namespace)");
  }
  const plan = planUserNamespace(io.env);
  if (plan.warning !== undefined) io.stderr.write(`warning: ${plan.warning}\n`);
  return runInUserNamespace(plan, command.length > 0 ? command : [io.env.SHELL ?? "/bin/sh"], io.env, signal);
};
