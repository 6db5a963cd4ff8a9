/**
 * `ocibuild buildkit info`: the BuildKit daemon's version, workers and platforms.
 * Also the executor flags `ocibuild build` shares (--executor, --buildkit-addr,
 * TLS files, --buildkit-staging-repo) and how they become an Executor.
 */
import { OcibuildError } from "../../errors.js";
import { BuildkitExecutor } from "../../builder/sandbox/buildkit.js";
import { CONNECT_FLAGS, connectOptions, executorOptionsFrom } from "./executor-flags.js";
export { EXECUTOR_FLAGS } from "./executor-flags.js";
import { formatPlatform } from "../../oci/platform.js";
import { type FlagSpec, type ParsedFlags, bool, helpText, parseFlags } from "../flags.js";
import type { CliIO, Command } from "../io.js";

/**
 * The executor the build flags ask for: undefined for the default (bubblewrap),
 * a BuildkitExecutor for `--executor buildkit`. Call `close()` on it after the build.
 */
export function executorFrom(p: ParsedFlags, io: CliIO): BuildkitExecutor | undefined {
  const opts = executorOptionsFrom(p, io);
  return opts ? new BuildkitExecutor(opts) : undefined;
}

const INFO_SPECS: FlagSpec[] = [
  ...CONNECT_FLAGS,
  { names: ["json"], type: "boolean", description: "print JSON" },
  { names: ["help"], short: ["h"], type: "boolean", description: "show this help" },
];

const USAGE = `Usage: ocibuild buildkit info [flags]

Connects to a BuildKit daemon and prints its version, workers and the
platforms each worker can run (what --executor buildkit can build for).`;

export const buildkitCommand: Command = async (args, io, signal) => {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    io.stdout.write(helpText(USAGE, INFO_SPECS, ["ocibuild buildkit info --buildkit-addr unix:///run/buildkit/buildkitd.sock"]));
    return sub === undefined ? 2 : 0;
  }
  if (sub !== "info") {
    throw new OcibuildError("USAGE", `unknown buildkit subcommand "${sub}"`, { hint: "ocibuild buildkit info" });
  }
  const p = parseFlags(rest, INFO_SPECS);
  if (bool(p, "help")) {
    io.stdout.write(helpText(USAGE, INFO_SPECS, ["ocibuild buildkit info --buildkit-addr tcp://buildkitd:1234 --buildkit-ca ca.pem --buildkit-cert cert.pem --buildkit-key key.pem"]));
    return 0;
  }
  if (p.positionals.length > 0) throw new OcibuildError("USAGE", `buildkit info takes no arguments, got "${p.positionals[0]}"`);
  // The staging repository is not used by info; any valid name will do.
  const ex = new BuildkitExecutor({ ...connectOptions(p, io), stagingRepo: "localhost/unused" });
  try {
    const info = await ex.info(signal);
    if (bool(p, "json")) {
      io.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      return 0;
    }
    const v = info.version;
    io.stdout.write(`daemon:   ${info.address}\n`);
    io.stdout.write(`version:  ${v ? `${v.package} ${v.version}${v.revision ? ` (${v.revision})` : ""}` : "unknown"}\n`);
    for (const w of info.workers) {
      io.stdout.write(`worker:   ${w.id}\n`);
      const exec = w.labels["org.mobyproject.buildkit.worker.executor"];
      const snap = w.labels["org.mobyproject.buildkit.worker.snapshotter"];
      if (exec || snap) io.stdout.write(`  executor: ${exec ?? "?"}, snapshotter: ${snap ?? "?"}\n`);
      io.stdout.write(`  platforms: ${w.platforms.map(formatPlatform).join(", ") || "(none)"}\n`);
    }
    return 0;
  } finally {
    ex.close();
  }
};
