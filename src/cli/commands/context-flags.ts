/**
 * Where a build's sources are, from its flags: the context (the positional CONTEXT or
 * --context: a directory or kaniko's dir://DIR, kaniko's tar://ARCHIVE, a git URL as
 * docker build takes it, or `-` for a tar archive or a Dockerfile alone on stdin),
 * kaniko's --context-sub-path and --git branch=, the Dockerfile (-f, `-` for stdin;
 * kaniko's lookup for a directory context), and buildx's --build-context NAME=VALUE.
 */
import { stat } from "node:fs/promises";
import { isAbsolute, posix, resolve } from "node:path";
import type { BuildOptions } from "../../api.js";
import { parseContextSpec, type ContextSpec } from "../../builder/context-source.js";
import { OcibuildError } from "../../errors.js";
import { list, str, type ParsedFlags } from "../flags.js";
import { readStdin, type CliIO } from "../io.js";

type ContextOptions = Pick<BuildOptions, "context" | "contextStream" | "dockerfile" | "dockerfileText" | "buildContexts">;

/** A context argument as a spec; a scheme ocibuild does not read is a usage error. */
function specOf(text: string): ContextSpec {
  try {
    return parseContextSpec(text);
  } catch (e) {
    if (e instanceof OcibuildError) throw new OcibuildError("USAGE_BAD_VALUE", e.message, { cause: e, details: { flag: "--context" } });
    throw e;
  }
}

/** kaniko's --git branch=B,single-branch=BOOL,recurse-submodules=BOOL,insecure-skip-tls=BOOL: the branch a git context checks out when its URL names none. */
function gitBranch(p: ParsedFlags): string | undefined {
  const v = str(p, "git");
  if (v === undefined) return undefined;
  let branch: string | undefined;
  for (const item of v.split(",").filter((x) => x !== "")) {
    const eq = item.indexOf("=");
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? "true" : item.slice(eq + 1);
    if (key === "branch") branch = value || undefined;
    else if (!["single-branch", "recurse-submodules", "insecure-skip-tls"].includes(key) || !["true", "false"].includes(value)) {
      throw new OcibuildError("USAGE_BAD_VALUE", `--git ${item}: takes branch=NAME, single-branch=BOOL, recurse-submodules=false, insecure-skip-tls=false`, { details: { flag: "--git" } });
    } else if (key !== "single-branch" && value === "true") {
      const instead = key === "recurse-submodules" ? "submodules are not checked out" : "TLS is always verified; give git a CA (GIT_SSL_CAINFO)";
      throw new OcibuildError("USAGE_UNSUPPORTED_FLAG", `flag --git ${key}=true is not supported: ${instead}`, { details: { flag: "--git" } });
    }
  }
  return branch;
}

/** The context as the library takes it: an absolute directory, tar://ABSOLUTE, a git URL, or "-"; with --context-sub-path and --git applied. */
function contextText(spec: ContextSpec, p: ParsedFlags, cwd: string, warn: (m: string) => void): string {
  const sub = str(p, "context-sub-path");
  const branch = gitBranch(p);
  if (branch !== undefined && spec.kind !== "git") warn(`--git branch=${branch} is ignored: the context is not a git repository`);
  if (spec.kind === "dir") return resolve(cwd, spec.path, sub ?? "");
  if (sub !== undefined && spec.kind !== "git") {
    throw new OcibuildError("USAGE_BAD_VALUE", `--context-sub-path takes a directory or git context, not ${spec.kind === "tar" ? "an archive" : "stdin"}`, { details: { flag: "--context-sub-path" } });
  }
  if (spec.kind === "tar") return `tar://${resolve(cwd, spec.path)}`;
  if (spec.kind === "stdin") return "-";
  const { url, ref = branch, subdir } = spec.source;
  const dir = sub === undefined ? subdir : posix.join(subdir ?? "", sub);
  return ref === undefined && dir === undefined ? url : `${url}#${ref ?? ""}${dir !== undefined ? `:${dir}` : ""}`;
}

/** The positional CONTEXT or --context (they may name the same one), as the library takes it, and what kind it is. */
function contextFrom(p: ParsedFlags, cwd: string, warn: (m: string) => void): { text: string; kind: ContextSpec["kind"] } {
  const contextArg = str(p, "context");
  if (p.positionals.length > 1) throw new OcibuildError("USAGE", `expected one CONTEXT, got ${p.positionals.length}: ${p.positionals.join(" ")}`);
  const given = p.positionals[0] ?? contextArg;
  if (given === undefined) throw new OcibuildError("USAGE_MISSING_ARGUMENT", "missing build CONTEXT (a directory, e.g. '.')", { hint: "ocibuild [flags] CONTEXT (run ocibuild build --help)" });
  const spec = specOf(given);
  const text = contextText(spec, p, cwd, warn);
  if (p.positionals.length === 1 && contextArg !== undefined && contextText(specOf(contextArg), p, cwd, () => {}) !== text) {
    throw new OcibuildError("USAGE", `two build contexts given: ${p.positionals[0]} and --context ${contextArg}`);
  }
  return { text, kind: spec.kind };
}

const exists = (path: string) => stat(path).then(() => true, () => false);

/**
 * A -f/--dockerfile path as kaniko resolves it for a directory context: from the working
 * directory if it is there, else relative to the context (kaniko's `--context
 * dir:///workspace --dockerfile Dockerfile` from anywhere). Found in neither place:
 * both are named (unless the context is missing too: the build reports that first).
 */
async function locateDockerfile(file: string, cwd: string, context: string): Promise<string> {
  const fromCwd = resolve(cwd, file);
  if (isAbsolute(file) || (await exists(fromCwd))) return fromCwd;
  const fromContext = resolve(context, file);
  if (await exists(fromContext)) return fromContext;
  if (!(await exists(context))) return fromCwd;
  throw new OcibuildError("BUILD_DOCKERFILE_NOT_FOUND", `Dockerfile ${file} not found: neither ${fromCwd} nor ${fromContext} exists`, {
    file: fromCwd,
    hint: "a relative -f/--dockerfile is looked up from the working directory, then in the build context",
  });
}

/** --build-context NAME=VALUE, repeatable; a relative directory is the working directory's. */
function buildContextsFrom(p: ParsedFlags, cwd: string): Record<string, string> | undefined {
  const values = list(p, "build-context");
  if (values.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    if (eq <= 0 || eq === v.length - 1) throw new OcibuildError("USAGE_BAD_VALUE", `--build-context "${v}" must be NAME=VALUE`, { details: { flag: "--build-context" } });
    const name = v.slice(0, eq);
    const value = v.slice(eq + 1);
    if (Object.hasOwn(out, name)) throw new OcibuildError("USAGE_BAD_VALUE", `--build-context ${name} is given twice`, { details: { flag: "--build-context" } });
    const local = !/^[a-z][a-z0-9+.-]*:\/\//i.test(value) && !/^git@/.test(value) && value !== "-";
    out[name] = local ? resolve(cwd, value) : value;
  }
  return out;
}

/** The context, the Dockerfile and the named contexts, from the flags; stdin is read for `-f -`, passed on for the context `-`. */
export async function contextOptions(p: ParsedFlags, io: CliIO, warn: (m: string) => void, signal?: AbortSignal): Promise<ContextOptions> {
  const { text: context, kind } = contextFrom(p, io.cwd, warn);
  const out: ContextOptions = { context };
  const buildContexts = buildContextsFrom(p, io.cwd);
  if (buildContexts) out.buildContexts = buildContexts;
  const file = str(p, "file");
  if (kind === "stdin") {
    if (file === "-") throw new OcibuildError("USAGE_BAD_VALUE", "the context and the Dockerfile cannot both be read from stdin (- and -f -)", { details: { flag: "--file" } });
    out.contextStream = io.stdin;
  }
  if (file === "-") out.dockerfileText = (await readStdin(io, signal)).toString("utf8");
  // In an archive or a repository, a relative -f is inside it: the library resolves it there.
  else if (file !== undefined) out.dockerfile = kind === "dir" ? await locateDockerfile(file, io.cwd, context) : file;
  return out;
}
