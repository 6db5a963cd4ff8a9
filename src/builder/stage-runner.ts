/**
 * Runs the stages of one or more platform plans: each stage once per distinct
 * input (a stage that does not depend on the target platform, such as
 * `FROM --platform=$BUILDPLATFORM ... AS build` without TARGET* args, is built
 * once for every target), once its base is ready, every instruction through
 * the cache; a step that reads another stage waits for it, holding no slot of
 * the core limit (at most that many steps run at once).
 */
import { dockerfileError, locateError, parseOnbuildTriggers, suggest, type Instruction, type Stage, type StagePlan } from "../dockerfile/index.js";
import { findStage, instructionSources } from "../dockerfile/stages.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { scratchState } from "./base.js";
import type { ResolvedBase } from "./base-resolve.js";
import { FromStep } from "./from-step.js";
import { cachedStep, layerChain, slotOf, type CacheContext } from "./cached-step.js";
import { emulationError, emulationStatus, runsNatively } from "./emulation.js";
import type { BuildEvent } from "./events.js";
import { withConfig, type StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";
import { isOcibuildError, optionWords } from "../errors.js";
import { monotonicMs } from "../clock.js";
import type { Digest } from "../oci/digest.js";
import { parseReference } from "../oci/reference.js";
import type { Material } from "../attest/provenance.js";
import { baseImageMaterial } from "./attest.js";
import { stepEnded, type CacheSummary, type StepReport } from "./step-report.js";
import type { RunnerOptions, StageDone, StageProgress, StageWalk } from "./stage-walk.js";

/** A resolved image as provenance names it: BuildKit's pkg:docker URI and its manifest digest. */
function imageMaterial(ref: string, state: StageState): Material {
  const r = parseReference(ref);
  const digest = state.baseName.slice(state.baseName.lastIndexOf("@") + 1) as Digest;
  return baseImageMaterial(r.name, r.digest ? undefined : r.tag, digest, state.platform);
}

export class StageRunner {
  private readonly memo = new Map<string, Promise<StageDone>>();
  private readonly keys = new Map<string, string>();
  /** The first stage failure of the build: no stage starts a step after it. */
  private failure?: { error: unknown };
  readonly summary: CacheSummary = { hits: 0, misses: 0, secondsSaved: 0, bytesReused: 0 };

  constructor(private readonly o: RunnerOptions) {}

  /** A registry image (or a named context's), resolved once per build (BaseResolver); each caller gets its own copy of the state. */
  private async image(ref: string, platform: Platform): Promise<ResolvedBase> {
    const r = await this.o.bases.resolve(ref, platform);
    const state = structuredClone(r.state);
    this.o.ctx.materials?.add(imageMaterial(ref, state), platform);
    return { ...r, state };
  }

  /**
   * A registry image for FROM or a --from, its failure (not found, unauthorized,
   * unreachable) located at the instruction that names it. A --from that is a bare
   * name was more likely meant as a stage: the error says no stage has that name.
   */
  private async imageAt(ref: string, platform: Platform, at: Instruction, plan: StagePlan): Promise<ResolvedBase> {
    try {
      return await this.image(ref, platform);
    } catch (e) {
      const where = { file: this.o.ctx.file, lines: [...this.o.ctx.lines] };
      const lines = [at.range.startLine, at.range.endLine] as const;
      if (at.kind === "from" || !isOcibuildError(e) || e.code === "ABORTED" || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(ref)) throw locateError(e, where, ...lines);
      const names = plan.stages.flatMap((s) => (s.name ? [s.name] : []));
      const near = suggest(ref, names);
      throw dockerfileError(e.code, `--from=${ref}: no stage is named "${ref}", and it is not an image either: ${e.message}`, where, ...lines, {
        cause: e,
        details: e.details,
        retryable: e.retryable,
        hint: near ? `did you mean the stage "${near}"?` : names.length > 0 ? `the stages are: ${names.join(", ")}` : "no stage of this Dockerfile has a name (FROM ... AS NAME)",
      });
    }
  }

  /** What distinguishes one execution of a stage from another: its own platform and inputs, and its dependencies'. */
  private memoKey(plan: StagePlan, stage: Stage, target: Platform): string {
    const id = `${formatPlatform(target)}#${stage.index}`;
    const known = this.keys.get(id);
    if (known) return known;
    const usesTarget = stage.instructions.some((i) => i.kind === "arg" && i.args.some((a) => a.key.startsWith("TARGET")));
    const deps = stage.dependsOn.filter((d) => d !== stage.index).map((d) => this.memoKey(plan, plan.stages[d]!, target));
    const key = `${stage.index}|${formatPlatform(stage.platform ?? target)}|${stage.base}|${usesTarget ? formatPlatform(target) : ""}|${deps.join(",")}`;
    this.keys.set(id, key);
    return key;
  }

  private run(plan: StagePlan, stage: Stage, target: Platform): Promise<StageDone> {
    const key = this.memoKey(plan, stage, target);
    let p = this.memo.get(key);
    if (!p) {
      const named = this.o.named;
      p = named?.has(stage.name) ? this.replaced(plan, stage, target) : this.launch(plan, stage, target);
      this.memo.set(key, p);
    }
    return p;
  }

  /**
   * A stage started as BuildKit schedules one: once its base is ready (start()
   * waits for a base stage), with the stages it reads (COPY --from, RUN --mount
   * from=) started alongside; each step that reads one waits for it then, not
   * the stage's first step. Once a stage fails, the steps still running are
   * stopped (as BuildKit cancels the rest of a failed solve), no stage starts
   * another step, and a stage settles only after the stages it started: a failed
   * build leaves no step running behind it and reports the first failure.
   */
  private async launch(plan: StagePlan, stage: Stage, target: Platform): Promise<StageDone> {
    const named = this.o.named;
    // A stage a named context replaces is asked for when needed: a local one is read by COPY --from, never run.
    const sources = stage.dependsOn
      .filter((d) => d !== stage.index && d !== stage.baseStage && !named?.has(plan.stages[d]!.name))
      .map((d) => this.run(plan, plan.stages[d]!, target));
    // Settled is watched from now on: a source failing before a step reads it is no unhandled rejection.
    const settled = Promise.allSettled(sources);
    try {
      return await this.execute(plan, stage, target);
    } catch (e) {
      // A step stopped because another stage failed reports that stage's error.
      throw this.stop(e);
    } finally {
      await settled;
    }
  }

  /** The build's first failure (kept, and the running steps stopped), which every later one reports as its own. */
  private stop(e: unknown): unknown {
    if (this.failure) return this.failure.error;
    this.failure = { error: e };
    this.o.stopSteps?.abort(e);
    return e;
  }

  /** The core limit's slot for `work`, unless a stage of the build failed (then its error). */
  private slot<T>(work: () => Promise<T>): Promise<T> {
    return this.o.limit(() => (this.failure ? Promise.reject(this.failure.error) : work()));
  }

  /**
   * Waits, outside the core limit, for the stages an instruction reads (so a step
   * never holds a slot while a stage it needs waits for one).
   */
  private async sources(plan: StagePlan, instr: Instruction, target: Platform): Promise<void> {
    const stages = instructionSources(instr).flatMap((n) => {
      const s = this.o.named?.has(n) ? undefined : findStage(plan, n);
      return s ? [this.run(plan, s, target)] : [];
    });
    await Promise.all(stages);
  }

  /**
   * A stage that a named context replaces (BuildKit: `--build-context NAME=...` over
   * `FROM ... AS NAME`): its instructions never run; it is the context's image.
   */
  private async replaced(plan: StagePlan, stage: Stage, target: Platform): Promise<StageDone> {
    const { state } = await this.imageAt(stage.name!, stage.platform ?? target, stage.from, plan);
    this.o.emit({ type: "log", level: "info", message: `stage ${stage.name} is replaced by the named context ${stage.name} (${state.baseName})` });
    return { state, key: state.baseName.slice(state.baseName.lastIndexOf("@") + 1), unknown: false, reports: [] };
  }

  /** The final state of `plan`'s target stage for `target`. */
  async final(plan: StagePlan, target: Platform): Promise<{ state: StageState; unknown: boolean }> {
    const done = await this.run(plan, plan.stages[plan.target]!, target);
    return { state: done.state, unknown: done.unknown };
  }

  /** The final state of one stage of `plan` built for `target` (built now if the target did not need it). */
  async stageState(plan: StagePlan, stage: Stage, target: Platform): Promise<StageState> {
    return (await this.run(plan, stage, target)).state;
  }

  /** Every step report of the given plans, in plan order; a shared stage once. */
  async reports(plans: { plan: StagePlan; target: Platform }[]): Promise<StepReport[]> {
    const seen = new Set<string>();
    const out: StepReport[] = [];
    for (const { plan, target } of plans) {
      for (const i of plan.order) {
        const key = this.memoKey(plan, plan.stages[i]!, target);
        if (seen.has(key) || !this.memo.has(key)) continue;
        seen.add(key);
        out.push(...(await this.memo.get(key)!).reports);
      }
    }
    return out;
  }

  private async execute(plan: StagePlan, stage: Stage, target: Platform): Promise<StageDone> {
    const platform = stage.platform ?? target;
    const started = monotonicMs();
    const start = await this.start(plan, stage, target, platform);
    // ONBUILD triggers of the base run first, as if written right after FROM; the child does not inherit them.
    const triggers = start.state.config.OnBuild?.length
      ? parseOnbuildTriggers(start.state.config.OnBuild, { file: `ONBUILD of ${stage.base}` }).map((t) => ({ ...t, range: stage.from.range, original: `ONBUILD ${t.original}` }))
      : [];
    const instructions = [...triggers, ...stage.instructions];
    const emulated = !runsNatively(platform, this.o.host);
    if (emulated && !this.o.cache.dryRun && instructions.some((i) => i.kind === "run")) {
      const status = await emulationStatus(platform);
      if (!status.ok) throw emulationError(platform, status);
    }
    const platformText = formatPlatform(platform);
    const tag = this.o.multiPlatform ? { platform: platformText } : {};
    const label = stage.name ?? String(stage.index);
    const total = instructions.length + (start.resolved ? 1 : 0);
    const resolved = start.resolved;
    const from = resolved ? await this.slot(() => this.fromStep(stage, resolved, { label, tag, total, started })) : undefined;
    const walk: StageWalk = {
      plan,
      label,
      platformText,
      tag,
      emulated,
      total,
      triggers: triggers.length,
      base: start.base,
      from,
      args: { buildArgs: this.o.buildArgs, globalArgs: stage.globalArgs, escapeToken: this.o.parsed.directives.escape },
      ctx: this.stageContext(plan, target, tag),
      cache: this.stageCache(plan, stage, target),
    };
    let done: StageProgress = { state: triggers.length > 0 ? withConfig(start.state, { OnBuild: null }) : start.state, key: start.key, unknown: start.unknown };
    // Each step's report, once the step has settled (its layer's blob written, which may be while the next steps run).
    const reports: Promise<StepReport>[] = [];
    try {
      for (let i = 0; i < instructions.length; ) {
        await this.sources(plan, instructions[i]!, target);
        this.o.signal?.throwIfAborted();
        const [first, before] = [i, done];
        // The core limit holds per step that runs: a stage waiting for another holds no slot.
        [done, i] = await this.slot(() => this.steps(walk, instructions, first, before, reports));
      }
    } finally {
      // A stage is done, or has failed, only once no blob of it is still being written.
      await Promise.allSettled(reports);
    }
    const settled = await Promise.all(reports);
    return { ...done, reports: from ? [from.end(), ...settled] : settled };
  }

  /**
   * Step `i` of a stage in a slot of the core limit, and the steps after it while each
   * leaves its layer still compressed (StepOutcome.settled): the next step takes the slot
   * over then, as the step itself would have gone on, unless it reads another stage. The
   * slot is kept until the last one's layer is written, so a step and its layer's
   * compression hold one slot. Returns the stage after them and the next step's index.
   */
  private async steps(walk: StageWalk, instructions: Instruction[], i: number, before: StageProgress, reports: Promise<StepReport>[]): Promise<[StageProgress, number]> {
    let last = await this.step(walk, i, instructions[i]!, before, reports);
    for (i++; last.pending && i < instructions.length && !this.readsStage(walk.plan, instructions[i]!); i++) {
      if (this.failure) throw this.failure.error;
      this.o.signal?.throwIfAborted();
      last = await this.step(walk, i, instructions[i]!, last, reports);
    }
    await reports.at(-1);
    return [last, i];
  }

  /** Whether `instr` reads another stage of `plan` (COPY --from, RUN --mount from=; not a named context). */
  private readsStage(plan: StagePlan, instr: Instruction): boolean {
    return instructionSources(instr).some((n) => !this.o.named?.has(n) && findStage(plan, n) !== undefined);
  }

  /** The FROM step of a stage on a registry image, begun (and ended at once when its layers are here already). */
  private fromStep(stage: Stage, resolved: ResolvedBase, o: { label: string; tag: { platform?: string }; total: number; started: number }): Promise<FromStep> {
    const instruction = `FROM ${stage.base}${stage.name ? ` AS ${stage.name}` : ""}`;
    return FromStep.begin({ ...o, emit: this.o.emit, line: stage.from.range.startLine, instruction, image: stage.base, resolved }, this.o.ctx);
  }

  /** Where a stage starts: its base (another stage, scratch or an image), and what its first metadata step chains on. */
  private async start(plan: StagePlan, stage: Stage, target: Platform, platform: Platform): Promise<StageProgress & { base: string; resolved?: ResolvedBase }> {
    if (stage.baseStage !== undefined) {
      const parent = await this.run(plan, plan.stages[stage.baseStage]!, target);
      // The parent's ARG values come along (BuildKit's dispatchState.init takes the base stage's env and build args).
      return { state: { ...parent.state, cmdSet: false }, base: `stage ${stage.baseStage}`, key: `stage:${parent.key}`, unknown: parent.unknown };
    }
    if (stage.base.toLowerCase() === "scratch") return { state: scratchState(platform), base: "scratch", key: "scratch", unknown: false };
    const resolved = await this.imageAt(stage.base, platform, stage.from, plan);
    const { state } = resolved;
    // The base's content identity, not its name.
    return { state, base: state.baseName, key: state.baseName.slice(state.baseName.lastIndexOf("@") + 1), unknown: false, resolved };
  }

  /** What the steps of a stage built for `target` may use: other stages, images, events tagged with the platform. */
  private stageContext(plan: StagePlan, target: Platform, tag: { platform?: string }): Omit<StepContext, "current"> {
    const o = this.o;
    return {
      ...o.ctx,
      emit: o.multiPlatform ? (e: BuildEvent) => o.emit(e.type === "output" || e.type === "layer-write" ? { ...e, ...tag } : e) : o.emit,
      stage: (n) => {
        const s = findStage(plan, n);
        return s ? this.run(plan, s, target).then((d) => d.state) : undefined;
      },
      image: (ref, p) => this.image(ref, p).then((r) => r.state),
    };
  }

  /** The cache as the steps of a stage built for `target` see it: other stages' layers by name or index; no lookups in a stage the noCacheFilter option names. */
  private stageCache(plan: StagePlan, stage: Stage, target: Platform): CacheContext {
    return {
      ...this.o.cache,
      noLookup: this.o.cache.noLookup || (this.o.noCacheStages.has(stage.index) ? `excluded by ${optionWords("noCacheFilter")}` : false),
      stageChain: (n) => {
        const s = findStage(plan, n);
        if (!s) return undefined;
        return this.run(plan, s, target).then((d) => (d.unknown ? `unknown:${d.key}` : layerChain(d.state, this.o.cache.chains)));
      },
    };
  }

  /**
   * Instruction `i` of a stage through the cache (step i + 1, after FROM when the stage
   * has one): its events, its report (pushed to `reports`, settled once the step is:
   * see StepOutcome.settled), the stage after it.
   */
  private async step(walk: StageWalk, i: number, instr: Instruction, before: StageProgress, reports: Promise<StepReport>[]): Promise<StageProgress & { pending: boolean }> {
    const o = this.o;
    const { label, tag, total, from } = walk;
    const n = i + 1 + (from ? 1 : 0);
    const text = instr.original.replace(/\s+/g, " ").trim();
    const runEmulated = walk.emulated && instr.kind === "run" ? { emulated: true } : {};
    o.emit({ type: "step-start", stage: label, step: n, total, instruction: text, line: instr.range.startLine, ...tag, ...runEmulated });
    const started = monotonicMs();
    const stepCtx: StepContext = {
      ...walk.ctx,
      current: { stage: label, step: n, instruction: instr },
      image: (ref, p) => this.imageAt(ref, p, instr, walk.plan).then((r) => r.state),
      beforeRoot: from ? (state) => from.beforeRoot(state, stepCtx) : undefined,
      deferLayerBlobs: true,
    };
    const out = await cachedStep(before.state, instr, stepCtx, walk.cache, {
      args: walk.args,
      step: n,
      slot: slotOf(o.project, label, i - walk.triggers, walk.platformText),
      prevKey: before.key,
      base: walk.base,
      parentUnknown: before.unknown,
    });
    // The base's pull, when this step needed it, is the FROM step's time.
    const pulling = from?.takeWait() ?? 0;
    if (out.cached) {
      this.summary.hits++;
      this.summary.secondsSaved += out.savedSeconds;
      this.summary.bytesReused += out.reusedBytes;
    } else this.summary.misses++;
    const end = () => stepEnded(out, before.state, { stage: label, step: n, total, instr, tag, seconds: out.cached ? 0 : Math.max(0, (monotonicMs() - started) / 1000 - pulling) }, o.emit);
    // A step whose blob is still being written ends (its event, its report) once it is, and
    // after the step before it ended (a stage's steps end in order); the next step starts now.
    const prev = reports.at(-1);
    const report = out.settled || prev ? Promise.all([prev, out.settled]).then(end) : Promise.resolve(end());
    // Its failure stops the stage's later steps (and the build's), as a failure of the step itself would.
    report.catch((e: unknown) => this.stop(e));
    reports.push(report);
    return { state: out.state, key: out.key, unknown: before.unknown || out.unknown === true, pending: out.settled !== undefined };
  }
}
