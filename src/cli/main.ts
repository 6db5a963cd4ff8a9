import { ExitCode, OcibuildError } from "../errors.js";
import { renderError } from "./errors.js";
import { type CliIO, type Command, processIO } from "./io.js";

const COMMANDS: Record<string, () => Promise<Command>> = {
  build: async () => (await import("./commands/build.js")).buildCommand,
  plan: async () => {
    const { buildCommand } = await import("./commands/build.js");
    return (args, io, signal) => buildCommand(["--dry-run", ...args], io, signal);
  },
  parse: async () => (await import("./commands/parse.js")).parseCommand,
  inspect: async () => (await import("./commands/inspect.js")).inspectCommand,
  run: async () => (await import("./commands/run.js")).runCommand,
  copy: async () => (await import("./commands/copy.js")).copyCommand,
  pull: async () => (await import("./commands/copy.js")).pullCommand,
  push: async () => (await import("./commands/copy.js")).pushCommand,
  setup: async () => (await import("./commands/setup.js")).setupCommand,
  buildkit: async () => (await import("./commands/buildkit.js")).buildkitCommand,
  unshare: async () => (await import("./commands/unshare.js")).unshareCommand,
  verify: async () => (await import("./commands/verify.js")).verifyCommand,
};

const COMMANDS_TEXT = `Commands:
  build     Build an image from a Dockerfile (the default command)
  plan      Show which steps a build would take from the cache and why the others rebuild (build --dry-run)
  parse     Print the parsed Dockerfile in BuildKit's AST dump format
  run       Run an image's command in the sandbox (as docker run --rm), exit with its status
  inspect   Show an image's manifest, index or config
  copy      Copy an image or index between registries and OCI layouts
  pull      Pull an image into an OCI layout
  push      Push an image from an OCI layout
  setup     setup binfmt: register qemu handlers for foreign-platform RUN steps (root)
  buildkit  buildkit info: a BuildKit daemon's version, workers and platforms
  unshare   Run a command as root of the user namespace rootless builds use (plain users)
  verify    Check an image's cosign signature with a public key; print its provenance and SBOM
  help      help COMMAND: that command's flags (as COMMAND --help)
`;

const USAGE = `Usage: ocibuild [build] [flags] CONTEXT
       ocibuild COMMAND [flags]

${COMMANDS_TEXT}
Run 'ocibuild --help' for the common build flags, 'ocibuild COMMAND --help' for a command's flags.
`;

/** `ocibuild --help`: the build usage and its common flags, then the commands (as kaniko and docker build show). */
async function fullHelp(): Promise<string> {
  const { BUILD_SPECS, BUILD_USAGE, COMMON_BUILD_FLAGS } = await import("./commands/build-options.js");
  const { flagLines } = await import("./flags.js");
  const common = COMMON_BUILD_FLAGS.map((n) => BUILD_SPECS.find((s) => s.names[0] === n)!);
  return `${BUILD_USAGE}\n\nCommon flags:\n${flagLines(common).join("\n")}\n\n${COMMANDS_TEXT}\nRun 'ocibuild build --help' for every build flag, 'ocibuild help COMMAND' or 'ocibuild COMMAND --help' for a command's.\n`;
}

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const ac = new AbortController();
  // The signal's name goes with the abort: `run` passes it on to the container's command.
  const onSignal = (sig: NodeJS.Signals) => ac.abort(Object.assign(new Error("interrupted"), { signal: sig }));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  // --debug, and buildx's -D: stack traces on errors.
  const debug = argv.includes("--debug") || argv.includes("-D");
  const args = argv.filter((a) => a !== "--debug" && a !== "-D");
  try {
    if (args.length === 0) {
      io.stderr.write(USAGE);
      return ExitCode.USAGE;
    }
    if (args[0] === "help" && args[1] !== undefined) {
      if (!Object.hasOwn(COMMANDS, args[1])) {
        throw new OcibuildError("USAGE", `unknown command "${args[1]}"`, { hint: `commands: ${Object.keys(COMMANDS).join(", ")}` });
      }
      return await (await COMMANDS[args[1]]!())(["--help"], io, ac.signal);
    }
    if (args[0] === "--help" || args[0] === "-h" || args[0] === "help") {
      io.stdout.write(await fullHelp());
      return ExitCode.OK;
    }
    if (args[0] === "--version" || args[0] === "version") {
      const { VERSION } = await import("../version.js");
      io.stdout.write(`ocibuild ${VERSION}\n`);
      return ExitCode.OK;
    }
    const name = args[0] !== undefined && Object.hasOwn(COMMANDS, args[0]) ? args[0] : "build";
    const rest = name === args[0] ? args.slice(1) : args;
    const command = await COMMANDS[name]!();
    return await command(rest, io, ac.signal);
  } catch (e) {
    return renderError(e, io, debug);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
