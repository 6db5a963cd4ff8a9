/**
 * The executor flags `ocibuild build` shares with `ocibuild buildkit` (--executor,
 * --buildkit-addr, TLS files, --buildkit-staging-repo), checked without loading the
 * BuildKit client (and gRPC) unless a build asks for it.
 */
import { OcibuildError } from "../../errors.js";
import type { BuildkitExecutorOptions } from "../../builder/sandbox/buildkit.js";
import { DEFAULT_BUILDKIT_ADDRESS } from "../../builder/sandbox/buildkit/address.js";
import { type FlagSpec, type ParsedFlags, str } from "../flags.js";
import type { CliIO } from "../io.js";

export const CONNECT_FLAGS: FlagSpec[] = [
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

export function connectOptions(p: ParsedFlags, io: CliIO) {
  return {
    address: str(p, "buildkit-addr") ?? io.env.BUILDKIT_HOST ?? DEFAULT_BUILDKIT_ADDRESS,
    ca: str(p, "buildkit-ca"),
    cert: str(p, "buildkit-cert"),
    key: str(p, "buildkit-key"),
  };
}

/**
 * What the build flags ask for: undefined for the default executor (bubblewrap), or
 * the options of a BuildkitExecutor for `--executor buildkit`. Validates the flags;
 * builds nothing, so `ocibuild build` loads gRPC only when it is used.
 */
export function executorOptionsFrom(p: ParsedFlags, io: CliIO): BuildkitExecutorOptions | undefined {
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
  return { ...connectOptions(p, io), stagingRepo, credentials: { authConfigPath: str(p, "authfile"), env: io.env } };
}

