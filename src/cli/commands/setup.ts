/**
 * `ocibuild setup binfmt [ARCH...]`: register Debian's qemu-user-static handlers
 * with binfmt_misc so that RUN steps of foreign platforms can run (root only).
 */
import { emulationStatus, setupBinfmt } from "../../builder/emulation.js";
import { OcibuildError } from "../../errors.js";
import { type FlagSpec, bool, helpText, parseFlags } from "../flags.js";
import type { Command } from "../io.js";

const SPECS: FlagSpec[] = [{ names: ["help"], short: ["h"], type: "boolean", description: "Show this help" }];
const USAGE = "Usage: ocibuild setup binfmt [QEMU-ARCH...]";
const EXAMPLES = ["ocibuild setup binfmt            # every qemu handler Debian ships", "ocibuild setup binfmt aarch64 arm"];

export const setupCommand: Command = async (args, io) => {
  const p = parseFlags(args, SPECS);
  if (bool(p, "help")) {
    io.stdout.write(helpText(USAGE, SPECS, EXAMPLES));
    return 0;
  }
  const [what, ...arches] = p.positionals;
  if (what !== "binfmt") throw new OcibuildError("USAGE", `unknown setup target ${JSON.stringify(what ?? "")}`, { hint: USAGE });
  const done = await setupBinfmt(arches.length > 0 ? arches : undefined);
  io.stdout.write(done.length > 0 ? `registered: ${done.join(", ")}\n` : "nothing to register: the handlers are in place\n");
  const arm = await emulationStatus({ os: "linux", architecture: "arm64" });
  io.stdout.write(`linux/arm64: ${arm.ok ? `runs through ${arm.handler}` : arm.reason}\n`);
  return 0;
};
