/**
 * A step: one instruction family's knowledge in one place, what its cache key is
 * made of and how it runs. The cache wrapper (cached-step.ts) and the dispatcher
 * (steps/index.ts) ask the step; neither knows an instruction kind.
 */
import type { Stats } from "node:fs";
import type { Instruction } from "../../dockerfile/index.js";
import type { KeyInputs } from "../../cache/key.js";
import type { HistoryEntry } from "../../oci/manifest.js";
import { addHistory, addLayer, type LayerRecord, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import type { ArgSources } from "./arg.js";

/** What content keys are made of: context file hashes, other stages' layers. */
export interface KeySources {
  hashFile: (path: string, st: Stats) => Promise<string>;
  /** Final ChainID of a stage (by name or index), for --from keys; undefined when no stage has that name. */
  stageChain: (nameOrIndex: string) => Promise<string> | undefined;
}

/** What a step may use besides its state and instruction. */
export interface StepEnv {
  readonly ctx: StepContext;
  readonly keys: KeySources;
  /** Where ARG values come from. */
  readonly args: ArgSources;
  /** The step's number in its stage (for its output events). */
  readonly step: number;
}

/**
 * The step's own key inputs; the cache adds the key version, the platform, and what
 * the key chains on (`parent`) and the base (a step may set those two itself:
 * COPY --link does not chain on the layers below).
 */
export type StepKeyInputs = Omit<KeyInputs, "v" | "platform" | "parent" | "base"> & Partial<Pick<KeyInputs, "parent" | "base">>;

/** A step for one instruction on one state: its key, and the two ways to finish it. */
export interface StepPlan {
  readonly inputs: StepKeyInputs;
  /** The instruction as the report shows it. */
  readonly shown: string;
  /** The step for real (a cache miss). */
  execute(): Promise<StageState>;
  /**
   * execute() only reads local files (the build context) and writes the step's root: it
   * starts no process, fetches nothing, and so may run while the push-permission check
   * is made (cached-step.ts). Absent: it waits for the check.
   */
  readonly local?: boolean;
  /** The state a cache hit leads to, from the entry's history and layer. */
  applyHit(history: HistoryEntry, layer: LayerRecord | undefined): StageState;
}

export interface Step<I extends Instruction = Instruction> {
  /**
   * A layer step (RUN, COPY, ADD, WORKDIR) may change the filesystem: its key is known
   * before it runs and chains on the content of the layers below (a rebuilt step that
   * gives the same bytes lets the next ones hit), and a dry run does not run it. Other
   * steps change only the config: pure and cheap, they always run, and their key
   * chains on the previous step's (it only serves the report).
   */
  readonly layered: boolean;
  /** `instr` arrives expanded (expandInstruction), except ARG, which expands its own defaults. */
  plan(state: StageState, instr: I, env: StepEnv): Promise<StepPlan>;
}

/** The state after a step that made `layer` (or, when it changed nothing, an empty history entry). */
export function withStepResult(state: StageState, layer: LayerRecord | undefined, entry: HistoryEntry): StageState {
  return layer ? addLayer(state, layer, entry) : addHistory(state, { ...entry, empty_layer: true });
}

/** A layer step's plan: a hit puts the entry's layer (or empty history entry) on `onto`. */
export function layerPlan(onto: StageState, inputs: StepKeyInputs, shown: string, execute: () => Promise<StageState>, local = false): StepPlan {
  return { inputs, shown, execute, local, applyHit: (history, layer) => withStepResult(onto, layer, history) };
}

/**
 * A metadata step from its pure function: it runs at once; its key is the text its
 * history entry shows (or, for ARG, what `keyInputs` says); a hit keeps the entry's
 * history, which carries the time the step was first built.
 */
export function metadataStep<I extends Instruction>(
  apply: (state: StageState, instr: I, env: StepEnv) => StageState,
  keyInputs?: (instr: I, done: StageState) => Partial<StepKeyInputs>,
): Step<I> {
  return {
    layered: false,
    async plan(state, instr, env) {
      const done = apply(state, instr, env);
      const text = done.history[done.history.length - 1]?.created_by ?? instr.original;
      return {
        inputs: { instruction: text, ...keyInputs?.(instr, done) },
        shown: text,
        execute: async () => done,
        applyHit: (history) => ({ ...done, history: [...done.history.slice(0, -1), history] }),
      };
    },
  };
}

/** What a --from (COPY, RUN --mount) names, for a key: a stage's layers, or an image's digest. */
export async function sourceIdentity(from: string, state: StageState, env: StepEnv): Promise<string> {
  const chain = env.keys.stageChain(from);
  return chain ? `stage:${await chain}` : `image:${(await env.ctx.image(from, state.platform)).baseName}`;
}
