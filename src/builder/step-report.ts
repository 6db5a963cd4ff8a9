/**
 * What a step leaves behind once it has ended: its report (in the build result and
 * provenance) and its step-end event.
 */
import type { StepOutcome } from "./cached-step.js";
import type { EventSink } from "./events.js";
import type { BaseReport } from "./from-step.js";
import type { StageState } from "./stage-state.js";
import type { Instruction } from "../dockerfile/index.js";

export interface StepReport {
  stage: string;
  /** The platform the step ran for (multi-platform builds). */
  platform?: string;
  instruction: string;
  line: number;
  cached: boolean;
  reason?: string;
  seconds: number;
  layer: string | null;
  /** The step's cache key (what provenance's max mode records). */
  key: string;
  /** FROM of a registry image (step 1 of its stage): the base, how it was resolved, what this build pulled of it. */
  base?: BaseReport;
}

export interface CacheSummary {
  hits: number;
  misses: number;
  secondsSaved: number;
  bytesReused: number;
}

/**
 * The report of a step that has ended, its step-end event emitted. `before`: the stage
 * before the step (a layer the step added is the one more in out.state). Called once
 * the step has settled: a layer's descriptor is read here.
 */
export function stepEnded(
  out: StepOutcome,
  before: StageState,
  at: { stage: string; step: number; total: number; instr: Instruction; tag: { platform?: string }; seconds: number },
  emit: EventSink,
): StepReport {
  const layer = out.state.layers.length > before.layers.length ? out.state.layers[out.state.layers.length - 1]!.descriptor.digest : null;
  const shown = out.instruction.replace(/ # ocibuild$/, "");
  const line = at.instr.range.startLine;
  const report: StepReport = { stage: at.stage, ...at.tag, instruction: shown, line, cached: out.cached, seconds: at.seconds, layer, key: out.key };
  if (!out.cached) report.reason = out.reason;
  const reason = out.reason && !out.cached ? { reason: out.reason } : {};
  emit({ type: "step-end", stage: at.stage, step: at.step, total: at.total, instruction: shown, line, cached: out.cached, ...reason, seconds: at.seconds, layer, ...at.tag });
  return report;
}
