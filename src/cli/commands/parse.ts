/**
 * `ocibuild parse FILE|-`: print a Dockerfile's AST in BuildKit's dump format
 * (byte-identical to BuildKit's parser golden files). Warnings go to stderr,
 * once each. With --check, also convert to typed instructions and validate
 * them as a build would (unknown instructions, flags, argument counts).
 */
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { OcibuildError } from "../../errors.js";
import { decodeUtf8Lossless, dumpAst, parseAst, parseDockerfile } from "../../dockerfile/index.js";
import type { ParseWarning } from "../../dockerfile/index.js";
import { type FlagSpec, bool, helpText, parseFlags } from "../flags.js";
import { readStdin, type CliIO, type Command } from "../io.js";

const SPECS: FlagSpec[] = [
  { names: ["check"], type: "boolean", description: "Also validate every instruction (flags, arguments) as a build would" },
  { names: ["help"], short: ["h"], type: "boolean", description: "Show this help" },
];

const USAGE = "Usage: ocibuild parse [--check] FILE\n       ocibuild parse [--check] -    (read the Dockerfile from stdin)";

export const parseCommand: Command = async (args, io, signal) => {
  const flags = parseFlags(args, SPECS);
  if (bool(flags, "help")) {
    io.stdout.write(helpText(USAGE, SPECS, ["ocibuild parse Dockerfile", "cat Dockerfile | ocibuild parse -"]));
    return 0;
  }
  if (flags.positionals.length !== 1) {
    throw new OcibuildError(
      flags.positionals.length === 0 ? "USAGE_MISSING_ARGUMENT" : "USAGE",
      flags.positionals.length === 0 ? "parse needs a Dockerfile path, or - for stdin" : "parse takes exactly one Dockerfile",
      { hint: USAGE },
    );
  }
  const target = flags.positionals[0]!;
  const file = target === "-" ? "<stdin>" : target;
  const bytes = target === "-" ? await readStdin(io, signal) : await readDockerfile(resolve(io.cwd, target), target, signal);
  // keep invalid UTF-8 bytes (Go prints them as \xNN) instead of replacing them with U+FFFD
  const text = decodeUtf8Lossless(bytes);
  const result = bool(flags, "check") ? parseDockerfile(text, { file }) : parseAst(text, file);
  printWarnings(result.warnings, file, io);
  io.stdout.write(`${dumpAst(result.ast)}\n`);
  return 0;
};

function printWarnings(warnings: ParseWarning[], file: string, io: CliIO): void {
  const seen = new Set<string>();
  for (const w of warnings) {
    const line = `warning[${w.code}]: ${w.line !== undefined ? `${file}:${w.line}: ` : ""}${w.message}\n`;
    if (seen.has(line)) continue;
    seen.add(line);
    io.stderr.write(line);
  }
}

async function readDockerfile(path: string, shown: string, signal: AbortSignal): Promise<Buffer> {
  try {
    return await readFile(path, { signal });
  } catch (e) {
    if (signal.aborted) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new OcibuildError(
      code === "ENOENT" ? "DOCKERFILE_NOT_FOUND" : "DOCKERFILE_READ",
      code === "ENOENT" ? `${shown}: no such file` : `${shown}: cannot read: ${(e as Error).message}`,
      { file: shown, cause: e },
    );
  }
}

