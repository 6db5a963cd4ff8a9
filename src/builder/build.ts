/**
 * The build: Dockerfile -> stage plan per target platform -> stages (StageRunner:
 * dependency order, independent and shared stages once, in parallel) -> images
 * (and an index for several platforms) -> pushes and outputs. Steps live in
 * steps/; this file only orchestrates.
 */
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import pLimit from "p-limit";
import { OcibuildError } from "../errors.js";
import { createIgnoreMatcher, ignoreFileCandidates, parseDockerfile, parseDockerignore, planStages, type StagePlan } from "../dockerfile/index.js";
import { OciLayout } from "../oci/layout.js";
import { descriptorOf, type Descriptor, type Platform } from "../oci/manifest.js";
import { parseReference, type ImageReference } from "../oci/reference.js";
import { RegistryClient, formatPlatform, hostPlatform, normalizePlatform, parsePlatform } from "../oci/registry/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { BuildEvent, EventSink } from "./events.js";
import { artifactSize, assembleImage, assembleIndex, topBlob, type BuiltArtifact, type BuiltImage } from "./image.js";
import { pushArtifact, writeOutputs, type BuildOutput } from "./output.js";
import { LayerStore } from "./layer-store.js";
import { BwrapExecutor } from "./sandbox/bwrap.js";
import type { Executor } from "./sandbox/index.js";
import type { SourceTree } from "./sources.js";
import { StageRunner, imageKey, type CacheSummary, type StepReport } from "./stage-runner.js";
import { imageState } from "./base.js";
import type { StageState } from "./stage-state.js";
import { resolveSecrets, startSshAgents, type SecretSpec, type SshAgents, type SshSpec } from "./secrets.js";
import { FileHasher } from "../cache/file-hash.js";
import { KEY_VERSION } from "../cache/key.js";
import { LocalCacheStore } from "../cache/local.js";
import { RegistryCacheStore } from "../cache/registry.js";
import type { CacheStore } from "../cache/store.js";

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
  /** Target platforms, "os/arch[/variant]", comma-separated (default: the host's). Several give an OCI index. */
  platform?: string;
  labels?: Record<string, string>;
  /** Push to the tags' registries (default true when tags are given). */
  push?: boolean;
  outputs?: BuildOutput[];
  registry?: RegistryOptions;
  /** Cache directory (content store, extracted layers, cache entries). */
  cacheDir?: string;
  /** Do not look up cache entries (still write them unless noCacheWrite). */
  noCache?: boolean;
  noCacheWrite?: boolean;
  /** A registry repository holding shared cache entries (kaniko's --cache-repo). */
  cacheRepo?: string;
  /** Entries older than this many seconds are not used (default two weeks). */
  cacheTtlSeconds?: number;
  /** Compute keys and report what would be cached or rebuilt, executing nothing. */
  dryRun?: boolean;
  /** Secrets for RUN --mount=type=secret (--secret). */
  secrets?: SecretSpec[];
  /** ssh agents for RUN --mount=type=ssh (--ssh). */
  ssh?: SshSpec[];
  /** Entitlements (--allow): "security.insecure" permits RUN --security=insecure. */
  allow?: string[];
  /** Network for RUN steps without --network (default: shared with the host, like docker build). */
  network?: "default" | "none" | "host";
  /** Clamp times to this (SOURCE_DATE_EPOCH, seconds). */
  sourceDateEpoch?: number;
  compressionLevel?: number;
  /** RUN executor (default: bubblewrap). */
  executor?: Executor;
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

export const DEFAULT_CACHE_TTL_SECONDS = 14 * 24 * 3600;

export function defaultCacheDir(env: Record<string, string | undefined>): string {
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "ocibuild");
  return join(env.HOME ?? "/root", ".cache", "ocibuild");
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

async function contextTree(root: string, dockerfilePath: string | undefined): Promise<SourceTree> {
  const candidates = dockerfilePath ? ignoreFileCandidates(dockerfilePath, root) : [join(root, ".dockerignore")];
  for (const c of candidates) {
    const text = await readFile(c, "utf8").catch(() => undefined);
    if (text !== undefined) return { root, ignore: createIgnoreMatcher(parseDockerignore(text)), label: "the build context" };
  }
  return { root, label: "the build context" };
}


/** Overlay/copy mode is worth saying once per build, not once per step. */
function onceMode(emit: EventSink): EventSink {
  let said = false;
  return (e) => {
    if (e.type === "log" && /^root: (overlayfs with|copy of|copy mode)/.test(e.message)) {
      if (said) return;
      said = true;
      emit({ type: "log", level: "info", message: e.message.startsWith("root: overlayfs") ? "root filesystems: overlayfs snapshots" : "root filesystems: copy-and-compare snapshots" });
      return;
    }
    emit(e);
  };
}


/** "linux/amd64,linux/arm64" -> normalised platforms, duplicates removed; default the host's. */
export function parsePlatformList(value: string | undefined, host: Platform): Platform[] {
  if (value === undefined || value.trim() === "") return [host];
  const out: Platform[] = [];
  for (const part of value.split(",").map((p) => p.trim()).filter(Boolean)) {
    const p = normalizePlatform(parsePlatform(part));
    if (!out.some((q) => formatPlatform(q) === formatPlatform(p))) out.push(p);
  }
  if (out.length === 0) throw new OcibuildError("USAGE_BAD_VALUE", `--platform "${value}" names no platform`);
  return out;
}

/** Start resolving the registry base of every stage the plans build, once per reference and platform. */
function prefetchBases(plans: { plan: StagePlan; target: Platform }[], registry: RegistryClient, signal?: AbortSignal): Map<string, Promise<StageState>> {
  const images = new Map<string, Promise<StageState>>();
  for (const { plan, target } of plans) {
    for (const i of plan.order) {
      const stage = plan.stages[i]!;
      if (stage.baseStage !== undefined || stage.base.toLowerCase() === "scratch") continue;
      const platform = stage.platform ? parsePlatform(stage.platform) : target;
      const key = imageKey(stage.base, platform);
      if (images.has(key)) continue;
      const p = imageState(stage.base, platform, registry, signal);
      // Awaited by the stage; a build that fails before then must not report it unhandled.
      p.catch(() => {});
      images.set(key, p);
    }
  }
  return images;
}

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const env = opts.env ?? process.env;
  const emit: EventSink = onceMode(opts.onEvent ?? (() => {}));
  const contextDir = resolve(opts.context);
  const df = await readDockerfile(opts);
  const parsed = parseDockerfile(df.text, { file: df.name });
  const warnings = parsed.warnings.map((w) => `${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  const host = hostPlatform();
  const targets = parsePlatformList(opts.platform, host);
  const buildArgs = opts.buildArgs ?? {};
  const plans = targets.map((target) => ({ target, plan: planStages(parsed, { buildArgs, target: opts.target, buildPlatform: host, targetPlatform: target }) }));
  for (const w of plans[0]!.plan.warnings) warnings.push(`${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  for (const k of plans[0]!.plan.unusedBuildArgs) warnings.push(`build arg ${k} was not consumed by any ARG`);
  const tags = (opts.tags ?? []).map((t) => parseReference(t));
  const dryRun = opts.dryRun ?? false;
  const singleOnly = (opts.outputs ?? []).find((o) => o.type === "docker-archive" || o.type === "oci-archive");
  if (targets.length > 1 && singleOnly) {
    throw new OcibuildError(
      "USAGE_BAD_VALUE",
      `a ${singleOnly.type} output holds one platform, but ${targets.length} were asked for (${targets.map(formatPlatform).join(", ")}); pick one with --platform, or use --output oci:DIR`,
    );
  }

  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir(env));
  await mkdir(join(cacheDir, "tmp"), { recursive: true });
  const scratchDir = await mkdtemp(join(cacheDir, "tmp", "build-"));
  const registry = new RegistryClient({ ...opts.registry, env: opts.registry?.env ?? env });
  let agents: SshAgents | undefined;
  try {
    // The base images of the stages to build are resolved (manifest and config) while
    // the rest is set up, not when their stage starts: on a fully cached rebuild those
    // round trips were most of what came before the first step.
    const bases = prefetchBases(plans, registry, opts.signal);
    const secrets = await resolveSecrets(opts.secrets ?? [], env, contextDir);
    agents = await startSshAgents(opts.ssh ?? [], env, scratchDir);
    const content = await OciLayout.create(join(cacheDir, "content"), opts.signal);
    const hasher = new FileHasher(join(cacheDir, "cache", `v${KEY_VERSION}`, "stat-cache.json"));
    const ttl = opts.cacheTtlSeconds ?? DEFAULT_CACHE_TTL_SECONDS;
    const stores: CacheStore[] = [new LocalCacheStore(join(cacheDir, "cache", `v${KEY_VERSION}`), content, ttl)];
    if (opts.cacheRepo) stores.push(new RegistryCacheStore(parseReference(opts.cacheRepo), registry, content, ttl));
    const runner = new StageRunner({
      parsed,
      buildArgs,
      host,
      multiPlatform: targets.length > 1,
      // A step's "previous entry" is looked up by project (the first tag's repository, on any registry), stage and position.
      project: tags[0]?.repository ?? contextDir,
      ctx: {
        file: df.name,
        lines: parsed.lines,
        escapeToken: parsed.directives.escape,
        content,
        layerStore: new LayerStore(join(cacheDir, "rootfs")),
        scratchDir,
        mountCacheDir: join(cacheDir, "mounts"),
        gitCacheDir: join(cacheDir, "git"),
        secrets,
        sshAgents: agents.sockets,
        allow: new Set(opts.allow ?? []),
        defaultNetwork: opts.network ?? "default",
        context: await contextTree(contextDir, df.path),
        registry,
        executor: opts.executor ?? new BwrapExecutor(),
        sourceDateEpoch: opts.sourceDateEpoch,
        compressionLevel: opts.compressionLevel,
        forceCopySnapshots: opts.forceCopySnapshots,
        signal: opts.signal,
        emit,
      },
      cache: {
        stores,
        noLookup: opts.noCache ?? false,
        noWrite: opts.noCacheWrite ?? false,
        dryRun,
        hashFile: (path, st) => hasher.hashFile(path, st, opts.signal),
      },
      registry,
      images: bases,
      limit: pLimit(Math.max(1, availableParallelism())),
      emit,
      signal: opts.signal,
    });
    const finals = await Promise.all(plans.map(({ plan, target }) => runner.final(plan, target)));
    await hasher.save().catch(() => {});
    const steps = await runner.reports(plans);
    for (const w of warnings) emit({ type: "log", level: "warn", message: w });
    const images = finals.map((f, i) => ({ platform: targets[i]!, image: assembleImage(f.state, { sourceDateEpoch: opts.sourceDateEpoch, labels: opts.labels }) }));
    const artifact: BuiltArtifact = images.length > 1 ? { images, index: assembleIndex(images) } : { images };
    const top = topBlob(artifact);
    const references: string[] = [];
    const src = { content, registry, signal: opts.signal };
    const push = !dryRun && (opts.push ?? (tags.length > 0 || (opts.outputs ?? []).some((o) => o.type === "registry")));
    if (push && tags.length > 0) {
      await pushArtifact(artifact, tags, src, { onEvent: emit });
      for (const t of tags) references.push(`${t.name}:${t.tag ?? "latest"}@${top.digest}`);
    }
    if (!dryRun) {
      for (const written of await writeOutputs(artifact, opts.outputs ?? [], tags, src)) {
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
      warnings,
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
