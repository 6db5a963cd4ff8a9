/**
 * The build: Dockerfile -> stage plan -> each reachable stage in dependency order
 * (independent stages in parallel) -> image -> outputs. Steps live in steps/; this
 * file only orchestrates.
 */
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join, resolve } from "node:path";
import pLimit from "p-limit";
import { OcibuildError } from "../errors.js";
import { createIgnoreMatcher, ignoreFileCandidates, parseDockerfile, parseDockerignore, parseOnbuildTriggers, planStages, type Stage } from "../dockerfile/index.js";
import { OciLayout } from "../oci/layout.js";
import { descriptorOf, type Descriptor, type Platform } from "../oci/manifest.js";
import { parseReference, type ImageReference } from "../oci/reference.js";
import { RegistryClient, formatPlatform, hostPlatform, parsePlatform } from "../oci/registry/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import { imageState, scratchState } from "./base.js";
import type { BuildEvent, EventSink } from "./events.js";
import { assembleImage, imageSize, type BuiltImage } from "./image.js";
import { pushImage, writeOutputs, type BuildOutput } from "./output.js";
import { LayerStore } from "./rootfs.js";
import { BwrapExecutor } from "./sandbox/bwrap.js";
import type { Executor } from "./sandbox/index.js";
import type { SourceTree } from "./sources.js";
import { withConfig, type StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";
import { cachedStep, layerChain, slotOf, type CacheContext } from "./cached-step.js";
import { FileHasher } from "../cache/file-hash.js";
import { KEY_VERSION } from "../cache/key.js";
import { LocalCacheStore } from "../cache/local.js";
import { RegistryCacheStore } from "../cache/registry.js";
import type { CacheStore } from "../cache/store.js";


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
  /** One platform, "os/arch[/variant]" (default: the host's). */
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

export interface StepReport {
  stage: string;
  instruction: string;
  line: number;
  cached: boolean;
  reason?: string;
  seconds: number;
  layer: string | null;
}

export interface CacheSummary {
  hits: number;
  misses: number;
  secondsSaved: number;
  bytesReused: number;
}

export interface BuildResult {
  /** Manifest digest. */
  digest: string;
  descriptor: Descriptor;
  image: BuiltImage;
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


export async function build(opts: BuildOptions): Promise<BuildResult> {
  const env = opts.env ?? process.env;
  const emit: EventSink = onceMode(opts.onEvent ?? (() => {}));
  const contextDir = resolve(opts.context);
  const df = await readDockerfile(opts);
  const parsed = parseDockerfile(df.text, { file: df.name });
  const warnings = parsed.warnings.map((w) => `${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  const host = hostPlatform();
  const targetPlatform: Platform = opts.platform ? parsePlatform(opts.platform) : host;
  const buildArgs = opts.buildArgs ?? {};
  const plan = planStages(parsed, { buildArgs, target: opts.target, buildPlatform: host, targetPlatform });
  for (const w of plan.warnings) warnings.push(`${df.name}${w.line ? `:${w.line}` : ""}: ${w.message}`);
  const tags = (opts.tags ?? []).map((t) => parseReference(t));

  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir(env));
  await mkdir(join(cacheDir, "tmp"), { recursive: true });
  const scratchDir = await mkdtemp(join(cacheDir, "tmp", "build-"));
  const registry = new RegistryClient({ ...opts.registry, env: opts.registry?.env ?? env });
  try {
    const content = await OciLayout.create(join(cacheDir, "content"), opts.signal);
    const layerStore = new LayerStore(join(cacheDir, "rootfs"));
    const executor = opts.executor ?? new BwrapExecutor();
    const hasher = new FileHasher(join(cacheDir, "cache", `v${KEY_VERSION}`, "stat-cache.json"));
    const ttl = opts.cacheTtlSeconds ?? DEFAULT_CACHE_TTL_SECONDS;
    const stores: CacheStore[] = [new LocalCacheStore(join(cacheDir, "cache", `v${KEY_VERSION}`), content, ttl)];
    if (opts.cacheRepo) stores.push(new RegistryCacheStore(parseReference(opts.cacheRepo), registry, content, ttl));
    const stagePromises = new Map<number, Promise<StageState>>();
    const limit = pLimit(Math.max(1, availableParallelism()));
    const tree = await contextTree(contextDir, df.path);

    const findStage = (nameOrIndex: string): Stage | undefined => {
      const lower = nameOrIndex.toLowerCase();
      return plan.stages.find((s) => s.name?.toLowerCase() === lower) ?? (/^\d+$/.test(nameOrIndex) ? plan.stages[Number(nameOrIndex)] : undefined);
    };

    const baseCtx = {
      file: df.name,
      lines: parsed.lines,
      escapeToken: parsed.directives.escape,
      content,
      layerStore,
      scratchDir,
      context: tree,
      registry,
      executor,
      sourceDateEpoch: opts.sourceDateEpoch,
      compressionLevel: opts.compressionLevel,
      forceCopySnapshots: opts.forceCopySnapshots,
      signal: opts.signal,
      emit: (e: BuildEvent) => emit(e),
      stage: (n: string) => {
        const s = findStage(n);
        return s ? runStage(s) : undefined;
      },
      image: (ref: string, platform: Platform) => imageState(ref, platform, registry, opts.signal),
    } satisfies StepContext;

    const runStage = (stage: Stage): Promise<StageState> => {
      let p = stagePromises.get(stage.index);
      if (!p) {
        p = (async () => {
          await Promise.all(stage.dependsOn.filter((d) => d !== stage.index).map((d) => runStage(plan.stages[d]!)));
          return limit(() => executeStage(stage));
        })();
        stagePromises.set(stage.index, p);
      }
      return p;
    };

    const stageKeys = new Map<number, string>();
    const stageUnknown = new Set<number>();
    const stageSteps = new Map<number, StepReport[]>();
    const summary: CacheSummary = { hits: 0, misses: 0, secondsSaved: 0, bytesReused: 0 };
    const project = tags[0]?.name ?? contextDir;
    const cache: CacheContext = {
      stores,
      noLookup: opts.noCache ?? false,
      noWrite: opts.noCacheWrite ?? false,
      dryRun: opts.dryRun ?? false,
      hashFile: (path, st) => hasher.hashFile(path, st, opts.signal),
      stageChain: (n) => {
        const st = findStage(n);
        if (!st) return undefined;
        return runStage(st).then((done) => (stageUnknown.has(st.index) ? `unknown:${st.index}` : layerChain(done)));
      },
    };

    const executeStage = async (stage: Stage): Promise<StageState> => {
      const label = stage.name ?? String(stage.index);
      const platform = stage.platform ? parsePlatform(stage.platform) : targetPlatform;
      let state: StageState;
      let base: string;
      let unknown = false;
      if (stage.baseStage !== undefined) {
        state = { ...(await runStage(plan.stages[stage.baseStage]!)), args: {}, cmdSet: false };
        base = `stage:${stageKeys.get(stage.baseStage) ?? ""}`;
        unknown = stageUnknown.has(stage.baseStage);
      } else if (stage.base.toLowerCase() === "scratch") {
        state = scratchState(platform);
        base = "scratch";
      } else {
        state = await imageState(stage.base, platform, registry, opts.signal);
        base = state.baseName;
      }
      // ONBUILD triggers of the base run first, as if written right after FROM; the child does not inherit them.
      const triggers = state.config.OnBuild?.length
        ? parseOnbuildTriggers(state.config.OnBuild, { file: `ONBUILD of ${stage.base}` }).map((t) => ({ ...t, range: stage.from.range, original: `ONBUILD ${t.original}` }))
        : [];
      if (triggers.length > 0) state = withConfig(state, { OnBuild: null });
      const instructions = [...triggers, ...stage.instructions];
      const total = instructions.length;
      const reports: StepReport[] = [];
      stageSteps.set(stage.index, reports);
      let prevKey = base;
      const platformText = formatPlatform(platform);
      for (const [i, instr] of instructions.entries()) {
        opts.signal?.throwIfAborted();
        const text = instr.original.replace(/\s+/g, " ").trim();
        emit({ type: "step-start", stage: label, step: i + 1, total, instruction: text, line: instr.range.startLine });
        const ctx: StepContext = { ...baseCtx, current: { stage: label, instruction: instr } };
        const before = state.layers.length;
        const started = performance.now();
        const out = await cachedStep(state, instr, ctx, cache, {
          args: { buildArgs, globalArgs: stage.globalArgs, escapeToken: parsed.directives.escape },
          step: i + 1,
          slot: slotOf(project, label, i - triggers.length, platformText),
          prevKey,
          base,
          parentUnknown: unknown,
        });
        const seconds = out.cached ? 0 : (performance.now() - started) / 1000;
        state = out.state;
        prevKey = out.key;
        if (out.unknown) unknown = true;
        if (out.cached) {
          summary.hits++;
          summary.secondsSaved += out.savedSeconds;
          summary.bytesReused += out.reusedBytes;
        } else summary.misses++;
        const layer = state.layers.length > before ? state.layers[state.layers.length - 1]!.descriptor.digest : null;
        const shown = out.instruction.replace(/ # ocibuild$/, "");
        const report: StepReport = { stage: label, instruction: shown, line: instr.range.startLine, cached: out.cached, seconds, layer };
        if (!out.cached) report.reason = out.reason;
        reports.push(report);
        emit({ type: "step-end", stage: label, step: i + 1, total, instruction: shown, line: instr.range.startLine, cached: out.cached, ...(out.reason && !out.cached ? { reason: out.reason } : {}), seconds, layer });
      }
      stageKeys.set(stage.index, prevKey);
      if (unknown) stageUnknown.add(stage.index);
      return state;
    };

    const finalState = await runStage(plan.stages[plan.target]!);
    await hasher.save().catch(() => {});
    const steps = plan.order.flatMap((i) => stageSteps.get(i) ?? []);
    for (const k of plan.unusedBuildArgs) warnings.push(`build arg ${k} was not consumed by any ARG`);
    for (const w of warnings) emit({ type: "log", level: "warn", message: w });
    const img = assembleImage(finalState, { sourceDateEpoch: opts.sourceDateEpoch, labels: opts.labels });
    const references: string[] = [];
    const src = { content, registry, signal: opts.signal };
    const dryRun = opts.dryRun ?? false;
    const push = !dryRun && (opts.push ?? (tags.length > 0 || (opts.outputs ?? []).some((o) => o.type === "registry")));
    if (push && tags.length > 0) {
      await pushImage(img, tags, src, { onEvent: emit });
      for (const t of tags) references.push(`${t.name}${t.tag ? `:${t.tag}` : ""}@${img.manifest.digest}`);
    }
    if (!dryRun) {
      for (const written of await writeOutputs(img, opts.outputs ?? [], tags, src)) {
        emit({ type: "output-written", reference: written });
        references.push(written);
      }
    }
    const result: BuildResult = {
      // A dry run that would rebuild something cannot know the digest.
      digest: dryRun && stageUnknown.size > 0 ? "" : img.manifest.digest,
      descriptor: descriptorOf(img.manifest),
      image: img,
      references,
      size: imageSize(img),
      steps,
      cache: summary,
      warnings,
    };
    emit({ type: "result", digest: result.digest, references, size: result.size });
    return result;
  } finally {
    await registry.close().catch(() => {});
    await rm(scratchDir, { recursive: true, force: true });
  }
}

export type { ImageReference, BuildEvent, EventSink };
