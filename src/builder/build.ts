/**
 * The build: Dockerfile -> stage plan per target platform -> stages (StageRunner:
 * dependency order, independent and shared stages once, in parallel) -> images
 * (and an index for several platforms) -> pushes and outputs. Steps live in
 * steps/; this file only orchestrates.
 */
import { readFile, rm, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { parseDockerfile, planStages, type ParseResult, type StagePlan } from "../dockerfile/index.js";
import { OciLayout } from "../oci/layout.js";
import { descriptorOf, type Descriptor } from "../oci/manifest.js";
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatformList, type Platform } from "../oci/platform.js";
import { parseReference, type ImageReference } from "../oci/reference.js";
import { RegistryClient } from "../oci/registry/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { BuildEvent, EventSink } from "./events.js";
import { artifactSize, assembleImage, assembleIndex, topBlob, type BuiltArtifact, type BuiltImage } from "./image.js";
import { checkOutputPaths, pushBuilt, pushTargets, writeOutputs, type BuildOutput } from "./output.js";
import { stageArtifact } from "./stage-image.js";
import { checkPushPermissions } from "./push-check.js";
import type { BwrapOptions } from "./sandbox/bwrap.js";
import type { Executor } from "./sandbox/index.js";
import type { CacheSummary, StepReport } from "./stage-runner.js";
import { baseResolver, createRunner, noCacheStages } from "./build-runner.js";
import { resolveSecrets, startSshAgents, type SecretSpec, type SshAgents, type SshSpec } from "./secrets.js";
import { FileHasher } from "../cache/file-hash.js";
import { KEY_VERSION } from "../cache/key.js";
import { openCacheDir, resolveCacheDir } from "./cache-dir.js";
import { recordBuiltImage } from "./local-images.js";
import { Redactor } from "../cache/redact.js";
import { DiffIdRecords } from "./fs/base-layers.js";

export type { CacheSummary, StepReport };

export interface BuildOptions {
  /** The build context directory. */
  context: string;
  /** Dockerfile path (default: CONTEXT/Dockerfile). */
  dockerfile?: string;
  /** Dockerfile text (e.g. from stdin); wins over `dockerfile`. */
  dockerfileText?: string;
  /** Image references to tag (and push, unless push is false). */
  tags?: string[];
  buildArgs?: Record<string, string>;
  target?: string;
  /**
   * Target platforms (default: the host's): parsed platforms, or "os/arch[/variant]"
   * comma-separated, parsed and normalised as buildx does. Several give an OCI index.
   */
  platform?: string | readonly Platform[];
  labels?: Record<string, string>;
  /** Push to the tags' registries (default true when tags are given). */
  push?: boolean;
  outputs?: BuildOutput[];
  registry?: RegistryOptions;
  /** Cache directory (content store, extracted layers, cache entries). */
  cacheDir?: string;
  /** Do not look up cache entries (still write them unless noCacheWrite). */
  noCache?: boolean;
  /** Stages (names or indexes) whose steps are rebuilt without a cache lookup, as buildx's --no-cache-filter; entries are still written. */
  noCacheFilter?: string[];
  noCacheWrite?: boolean;
  /** A registry repository holding shared cache entries (kaniko's --cache-repo). */
  cacheRepo?: string;
  /** Read cacheRepo's entries but push none to it (kaniko's --no-push-cache). */
  noCacheRepoWrite?: boolean;
  /** Entries older than this many seconds are not used (default two weeks), nor a base tag's recorded resolution. */
  cacheTtlSeconds?: number;
  /**
   * Resolve every base image tag in its registry (docker's --pull), and record the
   * result. Without it, a tag this cache directory recorded within cacheTtlSeconds
   * is reused without asking the registry. A digest-pinned base is never re-asked.
   */
  pull?: boolean;
  /** Do not check, before building, that the credentials at hand may push to every target (kaniko's --skip-push-permission-check). */
  skipPushPermissionCheck?: boolean;
  /** Compute keys and report what would be cached or rebuilt, executing nothing. */
  dryRun?: boolean;
  /** Secrets for RUN --mount=type=secret (--secret). */
  secrets?: SecretSpec[];
  /** ssh agents for RUN --mount=type=ssh (--ssh). */
  ssh?: SshSpec[];
  /**
   * Entitlements (--allow): "security.insecure" permits RUN --security=insecure,
   * "network.host" permits RUN --network=host and `network: "host"`.
   */
  allow?: string[];
  /**
   * Network for RUN steps without --network: "default" (a network namespace of the
   * step's own, outbound through slirp4netns, host loopback unreachable, as docker
   * build), "none" (only lo) or "host" (the host's; needs the network.host entitlement).
   */
  network?: "default" | "none" | "host";
  /** Clamp times to this (SOURCE_DATE_EPOCH, seconds). */
  sourceDateEpoch?: number;
  compressionLevel?: number;
  /**
   * Most bytes one layer of a base image may decompress to; beyond it the build
   * fails with LAYER_TOO_LARGE naming the layer (a gzip or zstd bomb). Default: no limit.
   */
  maxLayerSize?: number;
  /** RUN executor (default: bubblewrap). */
  executor?: Executor;
  /** What every RUN of the default executor gets (docker build's --add-host, --shm-size, --ulimit). */
  sandbox?: Pick<BwrapOptions, "extraHosts" | "shmSize" | "ulimits">;
  /** Use copy-and-compare snapshots even where overlayfs works. */
  forceCopySnapshots?: boolean;
  /** Environment for defaults (HOME, XDG_CACHE_HOME); default process.env. */
  env?: Record<string, string | undefined>;
  signal?: AbortSignal;
  onEvent?: EventSink;
}



export interface BuildResult {
  /** Digest of the manifest, or of the index for several platforms. */
  digest: string;
  descriptor: Descriptor;
  /** The (first platform's) image. */
  image: BuiltImage;
  /** Every platform's image, and the index over them when there are several. */
  artifact: BuiltArtifact;
  /** References pushed or written. */
  references: string[];
  size: number;
  steps: StepReport[];
  cache: CacheSummary;
  warnings: string[];
}

export { DEFAULT_CACHE_TTL_SECONDS } from "./build-runner.js";

/** The context must be a directory; checked first, so a wrong path is not blamed on a COPY source, or missed. */
async function checkContext(dir: string): Promise<void> {
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => e);
  if (!(st instanceof Error) && st.isDirectory()) return;
  const errno = st instanceof Error ? (st.code ?? st.message) : "ENOTDIR";
  const what = errno === "ENOENT" ? "does not exist" : errno === "ENOTDIR" ? "is not a directory" : "cannot be read";
  throw new OcibuildError("BUILD_CONTEXT_NOT_FOUND", `the build context ${dir} ${what} (${errno})`, { file: dir, cause: st instanceof Error ? st : undefined, details: { errno } });
}

async function readDockerfile(opts: BuildOptions): Promise<{ text: string; name: string; path?: string }> {
  if (opts.dockerfileText !== undefined) return { text: opts.dockerfileText, name: "Dockerfile" };
  const path = resolve(opts.dockerfile ?? join(opts.context, "Dockerfile"));
  try {
    return { text: await readFile(path, "utf8"), name: opts.dockerfile ?? "Dockerfile", path };
  } catch (e) {
    throw new OcibuildError("BUILD_DOCKERFILE_NOT_FOUND", `cannot read Dockerfile ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file: path, cause: e });
  }
}



/** Overlay/copy mode is worth saying once per build, not once per step. */
function onceMode(emit: EventSink): EventSink {
  let said = false;
  const sandboxNotes = new Set<string>();
  return (e) => {
    if (e.type === "log" && e.message.startsWith("sandbox: ")) {
      // Said by every RUN that meets it; shown once.
      if (sandboxNotes.has(e.message)) return;
      sandboxNotes.add(e.message);
    }
    const mode = e.type === "log" ? /^root: (overlayfs with|fuse-overlayfs with|copy of|copy mode)/.exec(e.message) : null;
    if (mode !== null) {
      if (said) return;
      said = true;
      const kind = mode[1] === "overlayfs with" ? "overlayfs" : mode[1] === "fuse-overlayfs with" ? "fuse-overlayfs" : "copy-and-compare";
      emit({ type: "log", level: "info", message: `root filesystems: ${kind} snapshots` });
      return;
    }
    emit(e);
  };
}


/** The build's target platforms: the host's by default; a string parsed as --platform is. */
function targetPlatforms(value: BuildOptions["platform"], host: Platform): Platform[] {
  if (typeof value === "string" || value === undefined) return parsePlatformList(value, host);
  const out = value.map(normalizePlatform).filter((p, i, all) => all.findIndex((q) => formatPlatform(q) === formatPlatform(p)) === i);
  return out.length > 0 ? out : [host];
}

/**
 * Build an image. Values of secret-looking build args (see cache/redact.ts) are masked
 * in every event, step report, warning and error the build gives back.
 */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  const redactor = new Redactor(opts.buildArgs ?? {});
  try {
    return await runBuild(opts, redactor);
  } catch (e) {
    throw redactor.maskError(e);
  }
}

/** One warning per build that names the secret-looking build args (never their values). */
function secretArgsWarning(redactor: Redactor): string[] {
  if (redactor.names.length === 0) return [];
  const names = redactor.names.join(", ");
  const id = redactor.names[0]!;
  return [
    `build arg${redactor.names.length > 1 ? "s" : ""} ${names} look${redactor.names.length > 1 ? "" : "s"} like a secret: the value is masked in logs, reports and the cache, but a build arg stays in the image history of every RUN that sees it; pass secrets with --secret id=${id},env=${id} and RUN --mount=type=secret,id=${id},env=${id} instead`,
  ];
}

/** What a build has read and decided before anything is fetched or run. */
export interface BuildPlan {
  contextDir: string;
  df: { text: string; name: string; path?: string };
  parsed: ParseResult;
  host: Platform;
  targets: Platform[];
  plans: { target: Platform; plan: StagePlan }[];
  buildArgs: Record<string, string>;
  tags: ImageReference[];
  dryRun: boolean;
  pushTo: ImageReference[];
  warnings: string[];
  noCacheStages: ReadonlySet<number>;
}

/** Check the options, read the Dockerfile and plan its stages for every target platform. */
async function planBuild(opts: BuildOptions, redactor: Redactor): Promise<BuildPlan> {
  if (opts.network === "host" && !(opts.allow ?? []).includes("network.host")) {
    throw new OcibuildError("BUILD_ENTITLEMENT_REQUIRED", 'network "host" for RUN needs the network.host entitlement', { hint: `allow it with ${optionWords("allow", "network.host")} if you trust this Dockerfile with the host's network` });
  }
  const contextDir = resolve(opts.context);
  await checkContext(contextDir);
  const df = await readDockerfile(opts);
  const parsed = parseDockerfile(df.text, { file: df.name });
  const warnings = parsed.warnings.map((w) => `${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  const host = hostPlatform();
  const targets = targetPlatforms(opts.platform, host);
  const buildArgs = opts.buildArgs ?? {};
  const plans = targets.map((target) => ({ target, plan: planStages(parsed, { buildArgs, target: opts.target, buildPlatform: host, targetPlatform: target }) }));
  for (const w of plans[0]!.plan.warnings) warnings.push(`${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  for (const k of plans[0]!.plan.unusedBuildArgs) warnings.push(`build arg ${k} was not consumed by any ARG`);
  const noCache = noCacheStages(opts.noCacheFilter, plans[0]!.plan);
  warnings.push(...secretArgsWarning(redactor));
  const tags = (opts.tags ?? []).map((t) => parseReference(t));
  const dryRun = opts.dryRun ?? false;
  const pushTo = dryRun ? [] : pushTargets(opts.outputs ?? [], tags, opts.push);
  const singleOnly = (opts.outputs ?? []).find((o) => o.type === "docker-archive" || o.type === "oci-archive");
  if (targets.length > 1 && singleOnly) {
    throw new OcibuildError(
      "USAGE_BAD_VALUE",
      `a ${singleOnly.type} output holds one platform, but ${targets.length} were asked for (${targets.map(formatPlatform).join(", ")}); pick one with --platform, or use --output oci:DIR`,
    );
  }
  return { contextDir, df, parsed, host, targets, plans, buildArgs, tags, dryRun, pushTo, warnings, noCacheStages: noCache };
}

async function runBuild(opts: BuildOptions, redactor: Redactor): Promise<BuildResult> {
  const env = opts.env ?? process.env;
  const sink = opts.onEvent ?? (() => {});
  const emit: EventSink = onceMode((e) => sink(redactor.maskFields(e)));
  const planned = await planBuild(opts, redactor);
  const { plans, targets, tags, dryRun, pushTo, warnings } = planned;
  if (!dryRun) await checkOutputPaths(opts.outputs ?? []);
  const cacheDir = await resolveCacheDir(opts.cacheDir, env, (w) => warnings.push(w));
  const scratchDir = await openCacheDir(cacheDir, opts.cacheDir === undefined ? env : undefined);
  const registry = new RegistryClient({ ...opts.registry, env: opts.registry?.env ?? env });
  let agents: SshAgents | undefined;
  try {
    // The base images of the stages to build are resolved (manifest and config: a record
    // of this cache directory, or the registry) while the rest is set up, not when their
    // stage starts: on a fully cached rebuild those round trips were most of what came
    // before the first step.
    const bases = baseResolver(opts, cacheDir, registry);
    bases.prefetch(plans);
    // While the bases resolve: may the credentials at hand push where the image goes? (kaniko's check)
    if (!opts.skipPushPermissionCheck) await checkPushPermissions(registry, pushTo, opts.signal);
    const secrets = await resolveSecrets(opts.secrets ?? [], env, planned.contextDir);
    agents = await startSshAgents(opts.ssh ?? [], env, scratchDir);
    const content = await OciLayout.create(join(cacheDir, "content"), opts.signal);
    const diffIds = new DiffIdRecords(join(cacheDir, "diffids"));
    const hasher = new FileHasher(join(cacheDir, "cache", `v${KEY_VERSION}`, "stat-cache.json"));
    const runner = await createRunner(opts, planned, { cacheDir, scratchDir, content, diffIds, hasher, registry, secrets, agents, bases, emit, redactor });
    const finals = await Promise.all(plans.map(({ plan, target }) => runner.final(plan, target)));
    await hasher.save().catch(() => {});
    const steps = (await runner.reports(plans)).map((s) => redactor.maskFields(s));
    for (const w of warnings) emit({ type: "log", level: "warn", message: w });
    const images = finals.map((f, i) => ({ platform: targets[i]!, image: assembleImage(f.state, { sourceDateEpoch: opts.sourceDateEpoch, labels: opts.labels }) }));
    const artifact: BuiltArtifact = images.length > 1 ? { images, index: assembleIndex(images) } : { images };
    const top = topBlob(artifact);
    // `ocibuild run IMAGE-ID` finds the image here, without a registry.
    if (!dryRun) await recordBuiltImage(cacheDir, content, artifact, opts.signal);
    const references: string[] = [];
    const made = stageArtifact(artifact, { content, registry, maxLayerSize: opts.maxLayerSize, diffIds });
    if (pushTo.length > 0) {
      await pushBuilt(made, pushTo, registry, { onEvent: emit, signal: opts.signal });
      for (const t of pushTo) references.push(`${t.name}:${t.tag}@${top.digest}`);
    }
    if (!dryRun) {
      for (const written of await writeOutputs(made, opts.outputs ?? [], tags, { maxLayerSize: opts.maxLayerSize, signal: opts.signal })) {
        emit({ type: "output-written", reference: written });
        references.push(written);
      }
    }
    const result: BuildResult = {
      // A dry run that would rebuild something cannot know the digest.
      digest: dryRun && finals.some((f) => f.unknown) ? "" : top.digest,
      descriptor: descriptorOf(top),
      image: images[0]!.image,
      artifact,
      references,
      size: artifactSize(artifact),
      steps,
      cache: runner.summary,
      warnings: warnings.map((w) => redactor.mask(w)),
    };
    emit({ type: "result", digest: result.digest, references, size: result.size });
    return result;
  } finally {
    await agents?.stop();
    await registry.close().catch(() => {});
    await rm(scratchDir, { recursive: true, force: true });
  }
}

export type { ImageReference, BuildEvent, EventSink };
