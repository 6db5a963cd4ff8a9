/**
 * FROM of a registry image as a step of its own, in the progress and the report: how
 * the base was resolved (an earlier build's record, or its registry) and what this
 * build pulled of its layers, so that a base pull is not counted in the first RUN.
 *
 * Layers are pulled when a step first needs the stage's filesystem (a fully cached
 * stage never pulls them), so the step ends then: at once when its layers are already
 * extracted here, when a step has made them ready (StepContext.beforeRoot; the wait is
 * taken out of that step's time), or at the end of the stage.
 */
import type { EventSink } from "./events.js";
import { monotonicMs } from "../clock.js";
import type { ResolvedBase } from "./base-resolve.js";
import { layersExtracted, readyLayers } from "./fs/step-root.js";
import type { LayerRecord, StageState } from "./stage-state.js";
import type { StepContext } from "./step-context.js";
import type { StepReport } from "./step-report.js";

/** What a FROM step's report adds: the base, how it was resolved, what was pulled of it. */
export interface BaseReport {
  /** The image as FROM names it (expanded). */
  image: string;
  /** The digest of the platform's manifest it resolved to. */
  digest: string;
  /** "cache": a resolution an earlier build recorded, no registry asked; "registry": resolved in its registry by this build. */
  resolved: ResolvedBase["resolved"];
  /** Compressed bytes of its layers this build fetched from the registry, and the seconds that took (extraction included). */
  pulledBytes: number;
  pullSeconds: number;
}

/** The FROM step's reason line: "resolved from cache (DIGEST)" or "resolved REF to DIGEST", and ", pulled N bytes in Xs". */
export function describeBase(b: BaseReport): string {
  const how = b.resolved === "cache" ? `resolved from cache (${b.digest})` : `resolved ${b.image} to ${b.digest}`;
  return b.pulledBytes > 0 ? `${how}, pulled ${b.pulledBytes} bytes in ${b.pullSeconds.toFixed(2)}s` : how;
}

export interface FromStepOptions {
  emit: EventSink;
  label: string;
  tag: { platform?: string };
  total: number;
  line: number;
  /** The instruction as the report shows it. */
  instruction: string;
  image: string;
  resolved: ResolvedBase;
  /** When the stage started (monotonicMs(), clock.ts): resolving counts in the step's time. */
  started: number;
}

export class FromStep {
  private readonly layers: readonly LayerRecord[];
  private readonly base: BaseReport;
  private seconds: number;
  /** Seconds a step waited for the pull, not yet taken out of its time. */
  private waited = 0;
  private report?: StepReport;

  private constructor(private readonly o: FromStepOptions) {
    const { state, resolved } = o.resolved;
    this.layers = state.layers;
    this.base = { image: o.image, digest: state.baseName.slice(state.baseName.lastIndexOf("@") + 1), resolved, pulledBytes: 0, pullSeconds: 0 };
    this.seconds = (monotonicMs() - o.started) / 1000;
  }

  /** The step started (step 1 of the stage), and ended at once when its layers are extracted here already. */
  static async begin(o: FromStepOptions, ctx: Pick<StepContext, "layerStore">): Promise<FromStep> {
    const step = new FromStep(o);
    o.emit({ type: "step-start", stage: o.label, step: 1, total: o.total, instruction: o.instruction, line: o.line, ...o.tag });
    if (await layersExtracted(step.layers, ctx)) step.end();
    return step;
  }

  /** StepContext.beforeRoot: a root over the base's layers needs them here; pulled (once) and the step ends. */
  async beforeRoot(state: StageState, ctx: StepContext): Promise<void> {
    if (this.report || !this.layers.every((l, i) => state.layers[i]?.descriptor.digest === l.descriptor.digest)) return;
    const t = monotonicMs();
    const bytes = await readyLayers(this.layers, ctx);
    const waited = (monotonicMs() - t) / 1000;
    this.waited += waited;
    this.base.pulledBytes = bytes;
    this.base.pullSeconds = waited;
    this.seconds += waited;
    this.end();
  }

  /** Seconds the current step spent waiting for the base's pull (taken out of its own time). */
  takeWait(): number {
    const w = this.waited;
    this.waited = 0;
    return w;
  }

  /** End the step (once): its step-end event and its report. */
  end(): StepReport {
    if (this.report) return this.report;
    const { o, base } = this;
    const cached = base.resolved === "cache" && base.pulledBytes === 0;
    const reason = describeBase(base);
    this.report = { stage: o.label, ...o.tag, instruction: o.instruction, line: o.line, cached, reason, seconds: this.seconds, layer: null, key: base.digest, base: { ...base } };
    o.emit({ type: "step-end", stage: o.label, step: 1, total: o.total, instruction: o.instruction, line: o.line, cached, reason, seconds: this.seconds, layer: null, resolved: base.resolved, pulledBytes: base.pulledBytes, ...o.tag });
    return this.report;
  }
}
