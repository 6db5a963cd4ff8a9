/**
 * `ocibuild buildkit info`: the BuildKit daemon's version, workers and platforms.
 * Also the executor flags `ocibuild build` shares (--executor, --buildkit-addr,
 * TLS files, --buildkit-staging-repo) and how they become an Executor.
 */
import { OcibuildError } from "../../errors.js";
import { BuildkitExecutor } from "../../builder/sandbox/buildkit.js";
import { DEFAULT_BUILDKIT_ADDRESS } from "../../builder/sandbox/buildkit/client.js";
import { formatPlatform } from "../../oci/registry/index.js";
import { type FlagSpec, type ParsedFlags, bool, helpText, parseFlags, str } from "../flags.js";
import type { CliIO, Command } from "../io.js";

const CONNECT_FLAGS: FlagSpec[] = [
  { names: ["buildkit-addr"], type: "string", valueName: "ADDR", description: `BuildKit daemon: unix:///path or tcp://host:port (default: $BUILDKIT_HOST, else ${DEFAULT_BUILDKIT_ADDRESS})` },
  { names: ["buildkit-ca"], type: "string", valueName: "PATH", description: "CA certificate (PEM) to verify a tcp:// daemon" },
  { names: ["buildkit-cert"], type: "string", valueName: "PATH", description: "client certificate (PEM) for a tcp:// daemon" },
  { names: ["buildkit-key"], type: "string", valueName: "PATH", description: "client key (PEM) for a tcp:// daemon" },
];

/** Flags for `ocibuild build` choosing and configuring the RUN executor. */
export const EXECUTOR_FLAGS: FlagSpec[] = [
  { names: ["executor"], type: "string", valueName: "bwrap|buildkit", description: "where RUN steps run: a local bubblewrap sandbox (default) or a BuildKit daemon" },
  ...CONNECT_FLAGS,
  {
    names: ["buildkit-staging-repo"],
    type: "string",
    valueName: "REPO",
    description: "repository both ocibuild and the daemon reach, for step inputs and results (default: --cache-repo)",
  },
];

function connectOptions(p: ParsedFlags, io: CliIO) {
  return {
    address: str(p, "buildkit-addr") ?? io.env.BUILDKIT_HOST ?? DEFAULT_BUILDKIT_ADDRESS,
    ca: str(p, "buildkit-ca"),
    cert: str(p, "buildkit-cert"),
    key: str(p, "buildkit-key"),
  };
}

/**
 * The executor the build flags ask for: undefined for the default (bubblewrap),
 * a BuildkitExecutor for `--executor buildkit`. Call `close()` on it after the build.
 */
export function executorFrom(p: ParsedFlags, io: CliIO): BuildkitExecutor | undefined {
  const name = str(p, "executor") ?? "bwrap";
  const buildkitOnly = ["buildkit-addr", "buildkit-ca", "buildkit-cert", "buildkit-key", "buildkit-staging-repo"].filter((f) => str(p, f) !== undefined);
  if (name === "bwrap" || name === "bubblewrap") {
    if (buildkitOnly.length > 0) {
      throw new OcibuildError("USAGE_BAD_VALUE", `--${buildkitOnly[0]} needs --executor buildkit`, { hint: "add --executor buildkit to run RUN steps on a BuildKit daemon" });
    }
    return undefined;
  }
  if (name !== "buildkit") {
    throw new OcibuildError("USAGE_BAD_VALUE", `unknown --executor "${name}"`, { hint: "use --executor bwrap or --executor buildkit" });
  }
  const stagingRepo = str(p, "buildkit-staging-repo") ?? str(p, "cache-repo");
  if (stagingRepo === undefined) {
    throw new OcibuildError("USAGE_MISSING_ARGUMENT", "--executor buildkit needs a repository the daemon can reach: --buildkit-staging-repo REPO (or --cache-repo)", {
      hint: "e.g. --buildkit-staging-repo registry.example.com/ci/ocibuild-staging",
    });
  }
  // The daemon gets the same registry credentials as ocibuild (over the session).
  return new BuildkitExecutor({ ...connectOptions(p, io), stagingRepo, credentials: { authConfigPath: str(p, "authfile"), env: io.env } });
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
