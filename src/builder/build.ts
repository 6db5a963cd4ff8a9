/**
 * The build: Dockerfile -> stage plan per target platform -> stages (StageRunner:
 * dependency order, independent and shared stages once, in parallel) -> images
 * (and an index for several platforms) -> pushes and outputs. Steps live in
 * steps/; this file only orchestrates.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { parseDockerfile, planStages, type ParseResult, type StagePlan } from "../dockerfile/index.js";
import { OciLayout } from "../oci/layout.js";
import { descriptorOf, type Descriptor } from "../oci/manifest.js";
import { formatPlatform, hostPlatform, normalizePlatform, parsePlatformList, type Platform } from "../oci/platform.js";
import { parseReference, type ImageReference } from "../oci/reference.js";
import { RegistryClient } from "../oci/registry/index.js";
import type { RegistryOptions } from "../oci/registry/index.js";
import type { BuildEvent, EventSink } from "./events.js";
import { artifactSize, topBlob, type BuiltArtifact, type BuiltImage } from "./image.js";
import type { Digest } from "../oci/digest.js";
import { assembleImages, attachAttestations, attestationRecords, readSigningKey, signPushed, type AttestationRecord, type SignatureRecord, type SignOptions } from "./finish.js";
import { MaterialSet, type AttestOptions } from "./attest.js";
import { provenanceOf } from "./provenance-input.js";
import { extraScans } from "./sbom-scan.js";
import { annotationsAt, type Annotation } from "../oci/annotations.js";
import { checkOutputPaths, pushBuilt, pushTargets, writeOutputs, type BuildOutput } from "./output.js";
import { stageArtifact } from "./stage-image.js";
import { lazyPushCheck } from "./push-check.js";
import type { BwrapOptions } from "./sandbox/bwrap.js";
import { layerFormat } from "./layer-convert.js";
import type { LayerCompression } from "../oci/layer-compression.js";
import type { Executor } from "./sandbox/index.js";
import type { CacheSummary, StepReport } from "./step-report.js";
import { baseResolver, createRunner, layerConversion, noCacheStages, onceMode } from "./build-runner.js";
import { resolveSecrets, startSshAgents, type SecretSpec, type SshAgents, type SshSpec } from "./secrets.js";
import { FileHasher } from "../cache/file-hash.js";
import { KEY_VERSION } from "../cache/key.js";
import { closeScratchDir, openCacheDir, resolveCacheDir } from "./cache-dir.js";
import { recordBuiltImage } from "./local-images.js";
import { Redactor } from "../cache/redact.js";
import { DiffIdRecords } from "./fs/base-layers.js";
import { openContexts, type BuildContexts, type ContextSource, type DockerfileSource } from "./build-contexts.js";
import { checkContextDir } from "./context-source.js";
import type { NamedContexts } from "./named-contexts.js";

export type { CacheSummary, StepReport };

export interface BuildOptions {
  /**
   * The build context: a directory; `tar://PATH`, a tar archive (plain or gzip) with the
   * Dockerfile inside; a git URL (`https://host/repo.git#ref:subdir`, `git://...`,
   * `git@host:repo`); or `-`: a tar archive, or a Dockerfile alone (then the context is
   * empty), read from `contextStream`. What is not a directory is unpacked into a temp
   * directory removed when the build ends.
   */
  context: string;
  /** The bytes of the context `-` (docker build's stdin). */
  contextStream?: NodeJS.ReadableStream;
  /**
   * Named contexts (buildx's --build-context NAME=VALUE), for `FROM NAME`, `COPY --from=NAME`,
   * `RUN --mount from=NAME`, replacing a stage or image of that name: a directory,
   * `tar://PATH` or a git URL (its own .dockerignore applies), `docker-image://REF`, or
   * `oci-layout://DIR[:TAG]` / `oci-layout://DIR@sha256:...`.
   */
  buildContexts?: Record<string, string>;
  /** Dockerfile path (default: CONTEXT/Dockerfile; for a context that is not a directory, a relative path is inside it). */
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
  /** Do not check, before the first step that must run (or the first write of a push to several repositories, or after a failed push), that the credentials at hand may push to every target (kaniko's --skip-push-permission-check). */
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
  /**
   * How new layers are compressed: "gzip" (the default), "zstd" (tar+zstd) or
   * "uncompressed", as buildx's compression= output option. A step taken from the
   * cache whose layer is stored in another compression has it re-compressed, not the
   * step rebuilt; the base image's layers keep theirs unless forceCompression.
   */
  compression?: LayerCompression;
  /** gzip 0-9 (default 6), zstd 0-22 (default 3; 0 is zstd's default too). */
  compressionLevel?: number;
  /** Re-compress the base image's layers into `compression` too (buildx's force-compression=true). */
  forceCompression?: boolean;
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
  /**
   * Most steps that run at once, over all stages (BuildKit's max-parallelism); a stage
   * waiting for another holds none. A whole number of at least 1; default: the CPU count.
   */
  maxParallelism?: number;
  /** OCI annotations (buildx's --annotation): manifest, manifest-descriptor, index and index-descriptor levels, per platform. */
  annotations?: Annotation[];
  /**
   * Attestations (buildx's --provenance, --sbom, --attest): SLSA provenance
   * (mode "min" or "max", SLSA "v1" or "v0.2") and an SPDX SBOM of the final image,
   * stored as BuildKit stores them. Off unless asked.
   */
  attest?: AttestOptions;
  /** Sign every pushed manifest in cosign's key-based format (and its attestations as .att). Needs a push. */
  sign?: SignOptions;
  /** Environment for defaults (HOME, XDG_CACHE_HOME, COSIGN_PASSWORD); default process.env. */
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
  /** Each platform image's attestation manifest, when attestations were asked for. */
  attestations?: AttestationRecord[];
  /** The signatures pushed, when a signing key was given. */
  signatures?: SignatureRecord[];
  /** A git context's URL and the commit built (`{ sha1: ... }`), as provenance records a source. */
  contextSource?: ContextSource;
}

export { DEFAULT_CACHE_TTL_SECONDS } from "./build-runner.js";

async function readDockerfile(df: DockerfileSource): Promise<{ text: string; name: string; path?: string }> {
  if (df.text !== undefined) return { text: df.text, name: df.name };
  try {
    return { text: await readFile(df.path, "utf8"), name: df.name, path: df.path };
  } catch (e) {
    throw new OcibuildError("BUILD_DOCKERFILE_NOT_FOUND", `cannot read Dockerfile ${df.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file: df.path, cause: e });
  }
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
    return await withContexts(opts, (opened) => runBuild(opts, redactor, opened));
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
    `build arg${redactor.names.length > 1 ? "s" : ""} ${names} look${redactor.names.length > 1 ? "" : "s"} like a secret: the value is masked in logs, reports and the cache, but a build arg stays in the image history of every RUN that sees it; pass secrets with ${optionWords("secrets", `id=${id},env=${id}`)} and RUN --mount=type=secret,id=${id},env=${id} instead`,
  ];
}

/** The cache directory (with what resolving it had to say) and the contexts, opened before the build. */
interface Opened {
  cacheDir: string;
  notes: string[];
  contexts: BuildContexts;
}

/** Runs `run` with the contexts open, and closes them however it ends (their git repositories are cached in the cache directory). */
async function withContexts(opts: BuildOptions, run: (opened: Opened) => Promise<BuildResult>): Promise<BuildResult> {
  const notes: string[] = [];
  const cacheDir = await resolveCacheDir(opts.cacheDir, opts.env ?? process.env, (w) => notes.push(w));
  const contexts = await openContexts(opts, join(cacheDir, "git"));
  try {
    return await run({ cacheDir, notes, contexts });
  } finally {
    await contexts.dispose();
  }
}

/** What a build has read and decided before anything is fetched or run. */
export interface BuildPlan {
  contextDir: string;
  /** The main context as given (a directory, tar://PATH, a git URL, "-"). */
  contextId: string;
  /** A git context's URL and commit. */
  contextSource?: ContextSource;
  named: NamedContexts;
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
async function planBuild(opts: BuildOptions, redactor: Redactor, contexts: BuildContexts): Promise<BuildPlan> {
  if (opts.network === "host" && !(opts.allow ?? []).includes("network.host")) {
    throw new OcibuildError("BUILD_ENTITLEMENT_REQUIRED", 'network "host" for RUN needs the network.host entitlement', { hint: `allow it with ${optionWords("allow", "network.host")} if you trust this Dockerfile with the host's network` });
  }
  const contextDir = contexts.dir;
  await checkContextDir(contextDir, `the build context ${contextDir}`);
  const df = await readDockerfile(contexts.dockerfile);
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
  layerFormat(opts); // the compression and its level are checked before anything runs
  const pushTo = dryRun ? [] : pushTargets(opts.outputs ?? [], tags, opts.push);
  const singleOnly = (opts.outputs ?? []).find((o) => o.type === "docker-archive" || o.type === "oci-archive");
  if (targets.length > 1 && singleOnly) {
    throw new OcibuildError(
      "USAGE_BAD_VALUE",
      `a ${singleOnly.type} output holds one platform, but ${targets.length} were asked for (${targets.map(formatPlatform).join(", ")}); pick one with ${optionWords("platform")}, or use ${optionWords("outputs", "oci:DIR")}`,
    );
  }
  if (opts.sign && !dryRun && pushTo.length === 0) {
    throw new OcibuildError("USAGE_BAD_VALUE", `signing needs a push: ${optionWords("sign")} signs what is pushed to a registry, and nothing is`, { hint: `give ${optionWords("tags")} with a registry, or leave out ${optionWords("sign")}` });
  }
  const known = { contextDir, contextId: contexts.id, ...(contexts.source ? { contextSource: contexts.source } : {}), named: contexts.named };
  return { ...known, df, parsed, host, targets, plans, buildArgs, tags, dryRun, pushTo, warnings, noCacheStages: noCache };
}

async function runBuild(opts: BuildOptions, redactor: Redactor, { cacheDir, notes, contexts }: Opened): Promise<BuildResult> {
  const env = opts.env ?? process.env;
  const sink = opts.onEvent ?? (() => {});
  const emit: EventSink = onceMode((e) => sink(redactor.maskFields(e)));
  const planned = await planBuild(opts, redactor, contexts);
  const { plans, targets, tags, dryRun, pushTo, warnings } = planned;
  const signingKey = dryRun ? undefined : await readSigningKey(opts.sign, env);
  if (!dryRun) await checkOutputPaths(opts.outputs ?? []);
  warnings.push(...notes);
  const scratchDir = await openCacheDir(cacheDir, opts.cacheDir === undefined ? env : undefined);
  const registry = new RegistryClient({ ...opts.registry, env: opts.registry?.env ?? env });
  let agents: SshAgents | undefined;
  try {
    // The base images of the stages to build are resolved (manifest and config: a record
    // of this cache directory, or the registry) while the rest is set up, not when their
    // stage starts: on a fully cached rebuild those round trips were most of what came
    // before the first step.
    const content = await OciLayout.create(join(cacheDir, "content"), opts.signal);
    const bases = baseResolver(opts, cacheDir, registry, planned.named, content);
    bases.prefetch(plans);
    // May the credentials at hand push? Asked by the first step that must run, or by the push before it writes (push-check.ts).
    const pushCheck = lazyPushCheck(registry, opts.skipPushPermissionCheck ? [] : pushTo, opts.signal);
    const secrets = await resolveSecrets(opts.secrets ?? [], env, planned.contextDir);
    agents = await startSshAgents(opts.ssh ?? [], env, scratchDir);
    const diffIds = new DiffIdRecords(join(cacheDir, "diffids"));
    const hasher = new FileHasher(join(cacheDir, "cache", `v${KEY_VERSION}`, "stat-cache.json"));
    const materials = new MaterialSet();
    const { format, converter } = layerConversion(opts, cacheDir, content, registry, emit);
    const runner = await createRunner(opts, planned, { cacheDir, scratchDir, content, diffIds, hasher, registry, secrets, agents, bases, emit, redactor, materials, format, converter, beforeWork: () => pushCheck.before() });
    const finals = await Promise.all(plans.map(({ plan, target }) => runner.final(plan, target)));
    // Long work after the steps (a conversion, an SBOM scan, a signature) waits for the check; a push, only before it writes.
    if (pushTo.length > 0 && (opts.forceCompression || opts.attest?.sbom || opts.attest?.provenance || signingKey)) await pushCheck.before("pushing");
    await hasher.save().catch(() => {});
    const steps = (await runner.reports(plans)).map((s) => redactor.maskFields(s));
    for (const w of warnings) emit({ type: "log", level: "warn", message: w });
    // force-compression: the base image's layers too (the build's own are already in the asked compression).
    const states = await Promise.all(finals.map(async (f) => ({ state: opts.forceCompression && !dryRun ? await converter.convertAll(f.state) : f.state })));
    const images = assembleImages({ finals: states, targets, sourceDateEpoch: opts.sourceDateEpoch, labels: opts.labels, annotations: opts.annotations });
    const blobs = { content, registry, maxLayerSize: opts.maxLayerSize, diffIds };
    const artifact = await attachAttestations({ images, attest: dryRun ? undefined : opts.attest, annotations: opts.annotations, names: pushTo.length ? pushTo : tags, materials, provenance: provenanceOf(opts, planned), steps, blobs, extraScans: (i) => extraScans({ plan: plans[i]!.plan, buildArgs: planned.buildArgs, stageState: (s) => runner.stageState(plans[i]!.plan, s, targets[i]!), blobs, contextDir: planned.contextDir, scratchDir, signal: opts.signal }), sourceDateEpoch: opts.sourceDateEpoch, emit, signal: opts.signal });
    const top = topBlob(artifact);
    // `ocibuild run IMAGE-ID` finds the image here, without a registry.
    if (!dryRun) await recordBuiltImage(cacheDir, content, artifact, opts.signal);
    const references: string[] = [];
    const made = stageArtifact(artifact, blobs);
    let signatures: SignatureRecord[] | undefined;
    if (pushTo.length > 0) {
      await pushBuilt(made, pushTo, registry, { onEvent: emit, signal: opts.signal, check: pushCheck, isNew: newManifests(images, opts.sourceDateEpoch) });
      for (const t of pushTo) references.push(`${t.name}:${t.tag}@${top.digest}`);
      if (signingKey) signatures = await signPushed(signingKey, artifact, top.digest, pushTo, registry, emit, opts.signal);
    }
    if (!dryRun) {
      for (const written of await writeOutputs(made, opts.outputs ?? [], tags, { maxLayerSize: opts.maxLayerSize, indexDescriptorAnnotations: annotationsAt(opts.annotations ?? [], "index-descriptor"), signal: opts.signal })) {
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
      ...(artifact.attestations ? { attestations: attestationRecords(artifact) } : {}),
      ...(signatures ? { signatures } : {}),
      ...(planned.contextSource ? { contextSource: planned.contextSource } : {}),
    };
    emit({ type: "result", digest: result.digest, references, size: result.size });
    return result;
  } finally {
    await agents?.stop();
    await registry.close().catch(() => {});
    await closeScratchDir(scratchDir);
  }
}

/**
 * PushOptions.isNew: an image with a layer this build wrote (LayerRecord.written) has
 * that step's history stamped with this build's time, so its manifest is new to every
 * repository, unless SOURCE_DATE_EPOCH pins the times (a reproducible rebuild may find
 * it there).
 */
function newManifests(images: readonly { image: BuiltImage }[], sourceDateEpoch: number | undefined): (manifest: Digest) => boolean {
  const made = new Set(sourceDateEpoch === undefined ? images.filter((i) => i.image.layers.some((l) => l.written !== undefined)).map((i) => i.image.manifest.digest) : []);
  return (d) => made.has(d);
}

export type { ImageReference, BuildEvent, EventSink };
