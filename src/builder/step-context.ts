/**
 * What a step may use besides its stage state: where to put things, how to reach
 * registries and other stages, and how to report. Passed explicitly; no globals.
 */
import type { CacheMounts } from "./cache-mounts.js";
import type { Executor } from "./sandbox/index.js";
import type { LayerStore } from "./fs/layer-store.js";
import type { DiffIdRecords } from "./fs/base-layers.js";
import type { OciLayout } from "../oci/layout.js";
import type { RegistryClient } from "../oci/registry/index.js";
import type { SourceTree } from "./sources.js";
import type { StageState } from "./stage-state.js";
import type { Instruction } from "../dockerfile/index.js";
import type { BuildEvent } from "./events.js";
import type { MaterialSet } from "./attest.js";
import type { LayerCompression } from "../oci/layer-compression.js";
import type { LayerConverter } from "./layer-convert.js";

export interface StepContext {
  /** The Dockerfile's display name and lines, for located errors. */
  readonly file: string;
  readonly lines: readonly string[];
  /** The Dockerfile's escape token (`# escape=`), for every expansion. */
  readonly escapeToken: "\\" | "`";
  /** Content store for blobs (layers we write, base layers we pull). */
  readonly content: OciLayout;
  /** Extracted single-layer directories, ready as overlay lowerdirs. */
  readonly layerStore: LayerStore;
  /** Per-build scratch space (removed at the end). */
  readonly scratchDir: string;
  /** Where ADD keeps fetched git repositories. */
  readonly gitCacheDir: string;
  /** RUN --mount=type=cache directories: where they persist across builds, and this build's users of each. */
  readonly cacheMounts: CacheMounts;
  /** --secret values by id (never written anywhere but a private temp file for the step). */
  readonly secrets: ReadonlyMap<string, Buffer>;
  /** --ssh agent sockets by id. */
  readonly sshAgents: ReadonlyMap<string, string>;
  /** --allow entitlements ("security.insecure"). */
  readonly allow: ReadonlySet<string>;
  /** Network for RUN steps that do not say (--network). */
  readonly defaultNetwork: "default" | "none" | "host";
  readonly context: SourceTree;
  /** A named local context (a directory, archive or git checkout) by name, for COPY --from and RUN --mount from=; undefined for other names. */
  localContext?(name: string): SourceTree | undefined;
  readonly registry: RegistryClient;
  readonly executor: Executor;
  /** Final state of another stage (by name or index) for COPY --from / RUN --mount from=. */
  stage(nameOrIndex: string): Promise<StageState> | undefined;
  /** An image used directly as a COPY --from source. */
  image(reference: string, platform: StageState["platform"]): Promise<StageState>;
  readonly sourceDateEpoch?: number;
  /** How new layers are compressed (default gzip), and at which level. */
  readonly compression?: LayerCompression;
  readonly compressionLevel?: number;
  /** Brings cache hits stored in another compression into `compression` (layer-convert.ts). */
  readonly converter?: LayerConverter;
  /** The DiffID each base blob was checked to decompress to (see fs/base-layers.ts). */
  readonly diffIds?: DiffIdRecords;
  /** Most bytes a pulled layer may decompress to (BuildOptions.maxLayerSize). */
  readonly maxLayerSize?: number;
  readonly forceCopySnapshots?: boolean;
  /**
   * A step's new layer may come back before its blob is compressed and written
   * (fs/step-root.ts mutateRoot, LayerRecord.written): set by the stage runner, which
   * awaits each step's StepOutcome.settled before its stage is done.
   */
  readonly deferLayerBlobs?: boolean;
  /** Where the base images and ADD sources the build resolves are recorded, for provenance. */
  readonly materials?: MaterialSet;
  readonly signal?: AbortSignal;
  emit(event: BuildEvent): void;
  /**
   * Awaited before a root over `state`'s layers is made (lowerDirs): the stage's FROM
   * step pulls its base's layers there, so that the pull is its own and not the step's.
   */
  readonly beforeRoot?: (state: StageState) => Promise<void>;
  /**
   * Called by a step that must run (cached-step.ts): resolves when the push-permission
   * check has passed, and rejects with its error. A step that runs a command, pulls or
   * converts a layer waits for it first; a COPY of context files runs meanwhile and is
   * only kept once it passed. Absent: nothing to wait for.
   */
  readonly beforeWork?: () => Promise<void>;
  /** The stage and instruction now running (for events). */
  readonly current?: { stage: string; step: number; instruction: Instruction };
}
