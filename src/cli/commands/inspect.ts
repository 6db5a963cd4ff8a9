/** `ocibuild inspect REF [--platform P] [--raw] [--config]`. */
import { OcibuildError } from "../../errors.js";
import { inspect } from "../../oci/copy.js";
import { type FlagSpec, bool, helpText, parseFlags } from "../flags.js";
import type { Command } from "../io.js";
import { REGISTRY_FLAGS, platformFrom, registryOptionsFrom } from "./copy.js";

const SPECS: FlagSpec[] = [
  { names: ["platform"], type: "string", valueName: "OS/ARCH[/VARIANT]", description: "show this platform's image from an index" },
  { names: ["raw"], type: "boolean", description: "print the exact bytes stored (for digests)" },
  { names: ["config"], type: "boolean", description: "print the image config (this host's platform unless --platform)" },
  ...REGISTRY_FLAGS,
];

const USAGE = `Usage: ocibuild inspect [flags] REF

Prints the manifest or index REF names (a registry reference or oci:DIR[:TAG]),
pretty-printed; with --raw the exact bytes; with --config the image config.
The digest of what is printed goes to stderr.`;

export const inspectCommand: Command = async (args, io, signal) => {
  const p = parseFlags(args, SPECS);
  if (bool(p, "help")) {
    io.stdout.write(
      helpText(USAGE, SPECS, [
        "ocibuild inspect localhost:5000/app:v1",
        "ocibuild inspect --raw ghcr.io/org/app:v1 | sha256sum",
        "ocibuild inspect --config --platform linux/arm64 docker.io/library/alpine:3",
        "ocibuild inspect oci:./layout:v1",
      ]),
    );
    return 0;
  }
  if (p.positionals.length !== 1) {
    throw new OcibuildError("USAGE_MISSING_ARGUMENT", `inspect takes one image reference, got ${p.positionals.length}`, { hint: "ocibuild inspect REF" });
  }
  const r = await inspect(p.positionals[0]!, {
    platform: platformFrom(p),
    raw: bool(p, "raw"),
    config: bool(p, "config"),
    registry: registryOptionsFrom(p, io),
    signal,
  });
  if (bool(p, "raw")) io.stdout.write(Buffer.from(r.bytes));
  else io.stdout.write(`${JSON.stringify(r.value, null, 2)}\n`);
  io.stderr.write(`${r.kind} ${r.digest} (${r.mediaType}, ${r.bytes.length} bytes)\n`);
  return 0;
};
