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
import { ignoreFileCandidates, type StagePlan } from "../dockerfile/index.js";
import type { OciLayout } from "../oci/layout.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import type { BuildOptions, BuildPlan } from "./build.js";
import type { EventSink } from "./events.js";
import type { DiffIdRecords } from "./fs/base-layers.js";
import { LayerStore } from "./fs/layer-store.js";
import type { LayerConverter } from "./layer-convert.js";
import type { LayerCompression } from "../oci/layer-compression.js";
import { CacheMounts } from "./cache-mounts.js";
import { BwrapExecutor } from "./sandbox/bwrap.js";
import type { SshAgents } from "./secrets.js";
import { localTree, type SourceTree } from "./sources.js";
import { StageRunner, imageKey } from "./stage-runner.js";
import { imageState } from "./base.js";
import type { NamedContexts } from "./named-contexts.js";
import type { Platform } from "../oci/platform.js";
import type { StageState } from "./stage-state.js";
import type { MaterialSet } from "./attest.js";

export const DEFAULT_CACHE_TTL_SECONDS = 14 * 24 * 3600;

/** The build context, with the .dockerignore that applies (one named after the Dockerfile first, as BuildKit does). */
function contextTree(root: string, dockerfilePath: string | undefined): Promise<SourceTree> {
  const candidates = dockerfilePath ? ignoreFileCandidates(dockerfilePath, root) : [join(root, ".dockerignore")];
  return localTree(root, candidates, { label: "the build context" });
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
  bases: Map<string, Promise<StageState>>;
  emit: EventSink;
  redactor: Redactor;
  materials: MaterialSet;
  /** The layers' compression and level, and the converter of cached layers written in another compression. */
  format: { compression: LayerCompression; level: number };
  converter: LayerConverter;
}

/** The stage runner of this build, with everything its steps may use. */
export async function createRunner(opts: BuildOptions, p: BuildPlan, r: BuildResources): Promise<StageRunner> {
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
      executor: opts.executor ?? new BwrapExecutor(opts.sandbox),
      sourceDateEpoch: opts.sourceDateEpoch,
      compression: r.format.compression,
      compressionLevel: r.format.level,
      converter: r.converter,
      maxLayerSize: opts.maxLayerSize,
      diffIds: r.diffIds,
      forceCopySnapshots: opts.forceCopySnapshots,
      materials: r.materials,
      signal: opts.signal,
      emit: r.emit,
    },
    cache: {
      stores: cacheStores(opts, r.cacheDir, r.content, r.registry),
      noLookup: opts.noCache ?? false,
      noWrite: opts.noCacheWrite ?? false,
      dryRun: p.dryRun,
      hashFile: (path, st) => r.hasher.hashFile(path, st, opts.signal),
      redactor: r.redactor,
    },
    registry: r.registry,
    images: r.bases,
    named: p.named,
    limit: pLimit(Math.max(1, availableParallelism())),
    emit: r.emit,
    signal: opts.signal,
  });
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

/** Start resolving the registry base of every stage the plans build, once per reference and platform. */
export function prefetchBases(plans: { plan: StagePlan; target: Platform }[], registry: RegistryClient, named: NamedContexts, signal?: AbortSignal): Map<string, Promise<StageState>> {
  const images = new Map<string, Promise<StageState>>();
  for (const { plan, target } of plans) {
    for (const i of plan.order) {
      const stage = plan.stages[i]!;
      if (stage.baseStage !== undefined || stage.base.toLowerCase() === "scratch") continue;
      // A named context's image is resolved when its stage asks; a stage one replaces never runs.
      if (named.has(stage.base) || named.has(stage.name)) continue;
      const platform = stage.platform ?? target;
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
