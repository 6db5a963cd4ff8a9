/** The types the stage runner (stage-runner.ts) passes between its methods, and its options. */
import type pLimit from "p-limit";
import type { ParseResult, StagePlan } from "../dockerfile/index.js";
import type { Platform } from "../oci/platform.js";
import type { RegistryClient } from "../oci/registry/index.js";
import type { BaseResolver } from "./base-resolve.js";
import type { FromStep } from "./from-step.js";
import type { CacheContext } from "./cached-step.js";
import type { EventSink } from "./events.js";
import type { StageState } from "./stage-state.js";
import type { ArgSources } from "./steps/index.js";
import type { StepContext } from "./step-context.js";
import type { NamedContexts } from "./named-contexts.js";
import type { StepReport } from "./step-report.js";

export interface StageDone {
  state: StageState;
  /** Key of the stage's last step (the identity a `FROM stage` child chains on). */
  key: string;
  /** Dry run: something in the stage would run, so its result is not known. */
  unknown: boolean;
  reports: StepReport[];
}

/** A stage as far as it got: its state, the key of its last step (or its base's identity), and whether a dry run left it unknown. */
export interface StageProgress {
  state: StageState;
  key: string;
  unknown: boolean;
}

/** What every step of one stage execution shares. */
export interface StageWalk {
  plan: StagePlan;
  label: string;
  platformText: string;
  /** `{ platform }` on events and reports when several platforms are built. */
  tag: { platform?: string };
  emulated: boolean;
  total: number;
  /** How many ONBUILD triggers run before the stage's own instructions. */
  triggers: number;
  /** What the stage was based on, for the report. */
  base: string;
  /** The stage's FROM step (a registry image base), step 1: the instructions' steps come after it. */
  from?: FromStep;
  args: ArgSources;
  ctx: Omit<StepContext, "current">;
  cache: CacheContext;
}

export interface RunnerOptions {
  parsed: ParseResult;
  buildArgs: Record<string, string>;
  host: Platform;
  /** Label steps with their platform (several targets). */
  multiPlatform: boolean;
  project: string;
  ctx: Omit<StepContext, "stage" | "image" | "current">;
  cache: Omit<CacheContext, "stageChain">;
  registry: RegistryClient;
  /** The build's named contexts: they replace stages and images of their names. */
  named?: NamedContexts;
  /** Indexes of the stages whose steps are rebuilt without a cache lookup (the noCacheFilter option). */
  noCacheStages: ReadonlySet<number>;
  /** The build's base images, some already being resolved. */
  bases: BaseResolver;
  limit: ReturnType<typeof pLimit>;
  emit: EventSink;
  signal?: AbortSignal;
  /** Aborted at the build's first stage failure: the steps' signal (ctx.signal) follows it, so running steps stop. */
  stopSteps?: AbortController;
}
