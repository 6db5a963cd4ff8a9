/**
 * The StageRunner a build makes: the context its steps see (where things go, the
 * registry, the executor, the build context with its .dockerignore) and the cache
 * stores around them.
 */
import { availableParallelism } from "node:os";
import { join } from "node:path";
import pLimit from "p-limit";
import type { FileHasher } from "../cache/file-hash.js";
import { KEY_VERSION } from "../cache/key.js";
import { LocalCacheStore } from "../cache/local.js";
import type { Redactor } from "../cache/redact.js";
import { RegistryCacheStore } from "../cache/registry.js";
import { type CacheStore, readOnlyStore } from "../cache/store.js";
import { ignoreFileCandidates, suggest, type StagePlan } from "../dockerfile/index.js";
import { OcibuildError, optionWords } from "../errors.js";
import type { OciLayout } from "../oci/layout.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import type { BuildOptions, BuildPlan } from "./build.js";
import type { EventSink } from "./events.js";
import type { DiffIdRecords } from "./fs/base-layers.js";
import { LayerStore } from "./fs/layer-store.js";
import { LayerConverter, layerFormat } from "./layer-convert.js";
import type { LayerCompression } from "../oci/layer-compression.js";
import { CacheMounts } from "./cache-mounts.js";
import { BaseResolver } from "./base-resolve.js";
import { BwrapExecutor } from "./sandbox/bwrap.js";
import type { Executor } from "./sandbox/index.js";
import type { SshAgents } from "./secrets.js";
import { localTree, type SourceTree } from "./sources.js";
import { findStage } from "../dockerfile/stages.js";
import { StageRunner } from "./stage-runner.js";
import type { NamedContexts } from "./named-contexts.js";
import type { MaterialSet } from "./attest.js";

export const DEFAULT_CACHE_TTL_SECONDS = 14 * 24 * 3600;

/** The build context, with the .dockerignore that applies (one named after the Dockerfile first, as BuildKit does). */
function contextTree(root: string, dockerfilePath: string | undefined): Promise<SourceTree> {
  const candidates = dockerfilePath ? ignoreFileCandidates(dockerfilePath, root) : [join(root, ".dockerignore")];
  return localTree(root, candidates, { label: "the build context" });
}

/** The build's base images: records in the cache directory, reused within the TTL unless the pull option says otherwise. */
export function baseResolver(opts: BuildOptions, cacheDir: string, registry: RegistryClient, named: NamedContexts, content: OciLayout): BaseResolver {
  const ttlSeconds = opts.cacheTtlSeconds ?? DEFAULT_CACHE_TTL_SECONDS;
  return new BaseResolver({ dir: join(cacheDir, "bases"), registry, pull: opts.pull ?? false, ttlSeconds, named, content, signal: opts.signal });
}

/** The layers' compression, and what re-compresses a cached layer written in another one. */
export function layerConversion(opts: BuildOptions, cacheDir: string, content: OciLayout, registry: RegistryClient, emit: EventSink): { format: { compression: LayerCompression; level: number }; converter: LayerConverter } {
  const format = layerFormat(opts);
  const converter = new LayerConverter({
    content, registry, dir: join(cacheDir, "converted"), ...format, maxLayerSize: opts.maxLayerSize, signal: opts.signal,
    onLog: (message) => emit({ type: "log", level: "info", message }),
  });
  return { format, converter };
}

/** The local cache, and the --cache-repo one after it. */
function cacheStores(opts: BuildOptions, cacheDir: string, content: OciLayout, registry: RegistryClient): CacheStore[] {
  const ttl = opts.cacheTtlSeconds ?? DEFAULT_CACHE_TTL_SECONDS;
  const stores: CacheStore[] = [new LocalCacheStore(join(cacheDir, "cache", `v${KEY_VERSION}`), content, ttl)];
  if (opts.cacheRepo) {
    const remote = new RegistryCacheStore(parseReference(opts.cacheRepo), registry, content, ttl);
    stores.push(opts.noCacheRepoWrite ? readOnlyStore(remote) : remote);
  }
  return stores;
}

/**
 * The stages the noCacheFilter option names (buildx's --no-cache-filter: names in any
 * case, or indexes), whose steps are rebuilt without a cache lookup. A name no stage
 * has is a usage error, before anything is fetched.
 */
export function noCacheStages(filter: readonly string[] | undefined, plan: StagePlan): ReadonlySet<number> {
  const out = new Set<number>();
  for (const name of filter ?? []) {
    const stage = findStage(plan, name);
    if (stage) {
      out.add(stage.index);
      continue;
    }
    const names = plan.stages.flatMap((s) => (s.name ? [s.name] : []));
    const near = suggest(name, names);
    throw new OcibuildError("USAGE_BAD_VALUE", `${optionWords("noCacheFilter", name)}: the Dockerfile has no stage named "${name}"`, {
      hint: near ? `did you mean ${near}?` : `name a stage or give its index: ${[...names, `0-${plan.stages.length - 1}`].join(", ")}`,
    });
  }
  return out;
}

/** What the build has opened for its steps: stores, registry, secrets, agents, base images being resolved. */
export interface BuildResources {
  cacheDir: string;
  scratchDir: string;
  content: OciLayout;
  diffIds: DiffIdRecords;
  hasher: FileHasher;
  registry: RegistryClient;
  secrets: ReadonlyMap<string, Buffer>;
  agents: SshAgents;
  bases: BaseResolver;
  emit: EventSink;
  redactor: Redactor;
  materials: MaterialSet;
  /** The layers' compression and level, and the converter of cached layers written in another compression. */
  format: { compression: LayerCompression; level: number };
  converter: LayerConverter;
  /** StepContext.beforeWork: the push-permission check, awaited before any step does work that may take long. */
  beforeWork?: () => Promise<void>;
}

/** The stage runner of this build, with everything its steps may use. */
/**
 * The default executor, made at the first RUN that is run: making it looks up bwrap,
 * setpriv, slirp4netns and unshare on PATH (~1 ms of stat calls), which a build whose
 * steps all come from the cache never needs.
 */
function lazyBwrap(sandbox: BuildOptions["sandbox"]): Executor {
  let made: BwrapExecutor | undefined;
  const executor = () => (made ??= new BwrapExecutor(sandbox));
  return { name: "bwrap", available: () => executor().available(), run: (spec) => executor().run(spec) };
}

export async function createRunner(opts: BuildOptions, p: BuildPlan, r: BuildResources): Promise<StageRunner> {
  // The steps stop when the caller aborts or when a stage of the build fails.
  const stopSteps = new AbortController();
  const stepSignal = opts.signal ? AbortSignal.any([opts.signal, stopSteps.signal]) : stopSteps.signal;
  const executor = opts.executor ?? lazyBwrap(opts.sandbox);
  return new StageRunner({
    parsed: p.parsed,
    buildArgs: p.buildArgs,
    host: p.host,
    multiPlatform: p.targets.length > 1,
    // A step's "previous entry" is looked up by project (the first tag's repository, on any registry), stage and position.
    project: p.tags[0]?.repository ?? p.contextId,
    ctx: {
      file: p.df.name,
      lines: p.parsed.lines,
      escapeToken: p.parsed.directives.escape,
      content: r.content,
      layerStore: new LayerStore(join(r.cacheDir, "rootfs")),
      scratchDir: r.scratchDir,
      cacheMounts: new CacheMounts(join(r.cacheDir, "mounts")),
      gitCacheDir: join(r.cacheDir, "git"),
      secrets: r.secrets,
      sshAgents: r.agents.sockets,
      allow: new Set(opts.allow ?? []),
      defaultNetwork: opts.network ?? "default",
      context: await contextTree(p.contextDir, p.df.path),
      localContext: (name) => p.named.tree(name),
      registry: r.registry,
      executor,
      sourceDateEpoch: opts.sourceDateEpoch,
      compression: r.format.compression,
      compressionLevel: r.format.level,
      converter: r.converter,
      beforeWork: warmExecutor(p, executor, r.beforeWork),
      maxLayerSize: opts.maxLayerSize,
      diffIds: r.diffIds,
      forceCopySnapshots: opts.forceCopySnapshots,
      materials: r.materials,
      signal: stepSignal,
      emit: r.emit,
    },
    cache: {
      stores: cacheStores(opts, r.cacheDir, r.content, r.registry),
      noLookup: opts.noCache ? `cache disabled (${optionWords("noCache")})` : false,
      noWrite: opts.noCacheWrite ?? false,
      dryRun: p.dryRun,
      hashFile: (path, st) => r.hasher.hashFile(path, st, opts.signal),
      redactor: r.redactor,
      chains: new Map(),
    },
    registry: r.registry,
    named: p.named,
    noCacheStages: p.noCacheStages,
    bases: r.bases,
    limit: pLimit(parallelism(opts.maxParallelism)),
    emit: r.emit,
    signal: opts.signal,
    stopSteps,
  });
}

/**
 * StepContext.beforeWork, which the first step that must run calls: the push check, and,
 * when the Dockerfile has a RUN, the executor's availability asked at once (bwrap's probe
 * is a process start, ~10 ms), so it is known by the time the first RUN asks, not made
 * then. A fully cached build runs no step and starts no probe.
 */
function warmExecutor(p: BuildPlan, executor: Executor, beforeWork: (() => Promise<void>) | undefined): () => Promise<void> {
  const hasRun = p.parsed.instructions.some((i) => i.kind === "run");
  return () => {
    // Its answer (or its failure) is the RUN's to report: only started here.
    if (hasRun) executor.available().catch(() => {});
    return beforeWork?.() ?? Promise.resolve();
  };
}

/** The core limit: the maxParallelism option, or the CPU count. */
function parallelism(max: number | undefined): number {
  if (max === undefined) return Math.max(1, availableParallelism());
  if (Number.isInteger(max) && max >= 1) return max;
  throw new OcibuildError("USAGE_BAD_VALUE", `${optionWords("maxParallelism", String(max))}: not a whole number of at least 1`);
}

/** Overlay/copy mode is worth saying once per build, not once per step. */
export function onceMode(emit: EventSink): EventSink {
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
