/**
 * `ocibuild [build] [flags] CONTEXT`: parses the flags (build-options.ts), runs
 * the library build with a progress renderer, prints the summary, and writes the
 * digest and metadata files (each atomically: temp name, then rename).
 */
import { writeFileAtomic } from "../../fs-atomic.js";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { BuildResult } from "../../builder/build.js";
import { isOcibuildError, OcibuildError } from "../../errors.js";
import { formatChecks, runChecks } from "../../dockerfile/checks.js";
import { parseDockerfile } from "../../dockerfile/parse.js";
import { checkWritable, pathError } from "../../user-path.js";
import { build } from "../../api.js";
import { openContexts } from "../../builder/build-contexts.js";
import { resolveCacheDir } from "../../builder/cache-dir.js";
import { parseReference } from "../../oci/reference.js";
import { helpText } from "../flags.js";
import type { CliIO, Command } from "../io.js";
import { reexecRootless } from "../rootless.js";
import { cacheSummary, createRenderer, dryRunSummary, resolveProgressMode, summary } from "../progress.js";
import { BUILD_EXAMPLES, BUILD_HELP_SECTIONS, BUILD_MAIN_SPECS, BUILD_USAGE, type BuildInvocation, parseBuildArgs } from "./build-options.js";

async function writeAtomic(path: string, text: string, signal?: AbortSignal): Promise<void> {
  try {
    await writeFileAtomic(path, text, { signal });
  } catch (e) {
    throw pathError("OUTPUT_WRITE_FAILED", "cannot write", path, e);
  }
}

/**
 * Docker's image ID, as buildx writes --iidfile: the config digest of a
 * single-platform image; for several platforms, the index digest.
 */
function imageId(result: BuildResult): string {
  return result.artifact.index ? result.digest : result.image.config.digest;
}

/**
 * The `--metadata-file` JSON (BuildKit's keys plus ocibuild's): digest,
 * config digest (one platform), descriptor, image names, one entry per executed step, the cache summary,
 * and the attestations and signatures when there are any.
 */
export function buildMetadata(result: BuildResult, tags: string[]): Record<string, unknown> {
  const c = cacheSummary(result);
  const configDigest = imageId(result);
  return {
    "containerimage.digest": result.digest,
    // As BuildKit's exporter: only a single-platform image has one config.
    ...(configDigest !== result.digest ? { "containerimage.config.digest": configDigest } : {}),
    "containerimage.descriptor": result.descriptor,
    "image.name": tags.map((t) => parseReference(t).toString()).join(","),
    "ocibuild.references": result.references,
    "ocibuild.size": result.size,
    "ocibuild.steps": result.steps.map((s) => ({ ...s, ...(s.cached && !s.base ? { reason: undefined } : { reason: s.reason ?? "no previous entry" }) })),
    "ocibuild.cache": { hits: c.hits, misses: c.misses, secondsSaved: c.secondsSaved, bytesReused: c.bytesReused },
    ...(result.attestations ? { "ocibuild.attestations": result.attestations } : {}),
    ...(result.signatures ? { "ocibuild.signatures": result.signatures } : {}),
  };
}

/** The image's names, as buildx's image.name lists them: every -t, then the registry outputs' name= values. */
function imageNames(inv: BuildInvocation): string[] {
  const names = [...(inv.options.tags ?? [])];
  for (const o of inv.options.outputs ?? []) if (o.type === "registry") names.push(...(o.names ?? []));
  return [...new Set(names.map((n) => parseReference(n).toString()))];
}

async function checkResultFiles(files: BuildInvocation["files"]): Promise<void> {
  for (const path of Object.values(files)) {
    if (path !== undefined) await checkWritable(path, "file", (e) => pathError("OUTPUT_WRITE_FAILED", "cannot write", path, e));
  }
}

async function writeResultFiles(inv: BuildInvocation, result: BuildResult, signal: AbortSignal): Promise<void> {
  const { files } = inv;
  const tags = (inv.options.tags ?? []).map((t) => parseReference(t));
  if (files.digest) await writeAtomic(files.digest, result.digest, signal);
  if (files.iid) await writeAtomic(files.iid, imageId(result), signal);
  if (files.imageNameWithDigest) await writeAtomic(files.imageNameWithDigest, tags.map((t) => `${t.name}@${result.digest}\n`).join(""), signal);
  if (files.imageNameTagWithDigest) {
    await writeAtomic(files.imageNameTagWithDigest, tags.map((t) => `${t.name}:${t.tag ?? "latest"}@${result.digest}\n`).join(""), signal);
  }
  if (files.metadata) await writeAtomic(files.metadata, `${JSON.stringify(buildMetadata(result, imageNames(inv)), null, 2)}\n`, signal);
}

/**
 * `--call check`: BuildKit's build checks over the Dockerfile, printed as buildx prints
 * them (stdout); nothing is built or pulled. Exit 1 only under `# check=error=true`.
 */
async function checkCommand(inv: BuildInvocation, io: CliIO, signal: AbortSignal): Promise<number> {
  const { options } = inv;
  // The context is opened for its Dockerfile only (an archive unpacked, a repository fetched); named contexts are not read.
  const cacheDir = await resolveCacheDir(options.cacheDir, options.env ?? {}, () => {});
  const contexts = await openContexts({ ...options, buildContexts: undefined, signal }, join(cacheDir, "git"));
  const df = contexts.dockerfile;
  const file = df.text !== undefined ? "Dockerfile" : basename(df.name);
  let text: string;
  try {
    text = df.text ?? (await readFile(df.path, { encoding: "utf8", signal }));
  } catch (e) {
    throw pathError("BUILD_DOCKERFILE_NOT_FOUND", "cannot read the Dockerfile", df.path!, e);
  } finally {
    await contexts.dispose();
  }
  const parsed = parseDockerfile(text, { file });
  const result = runChecks(parsed, options.buildArgs?.BUILDKIT_DOCKERFILE_CHECK ?? parsed.directives.check);
  io.stdout.write(formatChecks(result, file, parsed.lines));
  if (result.error && result.warnings.length > 0) {
    throw new OcibuildError("BUILD_CHECK_FAILED", `lint violation found for rules: ${[...new Set(result.warnings.map((w) => w.rule))].join(", ")}`, { hint: "# check=error=true makes build check warnings fail the build" });
  }
  return 0;
}

/**
 * A plain user's build runs again as root of a new user namespace (rootless mode),
 * unless it only asks for help or a plan, or uses BuildKit for RUN where no
 * namespace can be made.
 */
function maybeRootless(args: string[], io: CliIO, signal: AbortSignal): Promise<number | undefined> {
  const buildkit = args.some((a, i) => a === "--executor=buildkit" || (a === "--executor" && args[i + 1] === "buildkit"));
  return reexecRootless("build", args, io, signal, { localOnly: ["--dry-run", "--check", "--call"], withoutNamespace: buildkit });
}

export const buildCommand: Command = async (args, io, signal) => {
  const rootless = await maybeRootless(args, io, signal);
  if (rootless !== undefined) return rootless;
  const inv = await parseBuildArgs(args, io, signal);
  if (inv.help) {
    io.stdout.write(helpText(BUILD_USAGE, BUILD_MAIN_SPECS, BUILD_EXAMPLES, BUILD_HELP_SECTIONS));
    return 0;
  }
  if (inv.call === "check") return checkCommand(inv, io, signal);
  const mode = resolveProgressMode(inv.progress, io.stderr, inv.quiet);
  const renderer = createRenderer(mode, mode === "json" ? io.stdout : io.stderr);
  let result: BuildResult;
  try {
    // A digest or metadata file that cannot be written fails now, not after the build.
    if (!inv.options.dryRun) await checkResultFiles(inv.files);
    result = await build({ ...inv.options, signal, onEvent: (e) => renderer.onEvent(e) });
  } catch (e) {
    if (mode === "json") {
      renderer.onEvent({ type: "error", code: isOcibuildError(e) ? e.code : "INTERNAL", message: e instanceof Error ? e.message : String(e) });
    }
    throw e;
  } finally {
    renderer.close();
  }
  if (inv.options.dryRun) {
    // Nothing was built: no digest files, only the report (stdout, or the json result event).
    if (mode !== "json") io.stdout.write(dryRunSummary(result));
    return 0;
  }
  await writeResultFiles(inv, result, signal);
  if (mode === "quiet") io.stdout.write(`${result.digest}\n`);
  else if (mode !== "json") io.stdout.write(summary(result));
  return 0;
};
