/**
 * ARG inside a stage: declares variables visible to the following instructions,
 * with BuildKit's rules (resolveArgs): the --build-arg wins, else the default
 * (expanded), else a global ARG of the same name; with none, the variable keeps the
 * value it already had (from an earlier ARG or the parent stage), or stays unset.
 */
import { resolveArgs, type ArgInstr } from "../../dockerfile/index.js";
import { addHistory, expansionEnv, type StageState } from "../stage-state.js";
import { metadataStep, type Step } from "./step.js";

export interface ArgSources {
  buildArgs: Readonly<Record<string, string>>;
  globalArgs: Readonly<Record<string, string>>;
  escapeToken?: "\\" | "`";
}

function declareArgs(state: StageState, instr: ArgInstr, src: ArgSources): StageState {
  const args: Record<string, string> = { ...state.args };
  const shown: string[] = [];
  for (const { key, value } of resolveArgs(instr, { buildArgs: { ...src.buildArgs }, globalArgs: { ...src.globalArgs }, env: expansionEnv(state), escapeToken: src.escapeToken })) {
    if (value !== undefined) {
      args[key] = value;
      shown.push(`${key}=${value}`);
    } else {
      shown.push(key); // no value: an inherited or earlier value stays, as in BuildKit
    }
  }
  return addHistory({ ...state, args }, { created_by: `ARG ${shown.join(" ")}`, comment: "ocibuild.dockerfile.v0", empty_layer: true });
}

/** ARG's key is its text as written plus the values it takes, so that a changed value is named. */
export const argStep: Step<ArgInstr> = metadataStep(
  (state, instr, env) => declareArgs(state, instr, env.args),
  (instr, done) => ({
    instruction: instr.original,
    args: Object.fromEntries(instr.args.filter((a) => Object.hasOwn(done.args, a.key)).map((a) => [a.key, done.args[a.key]!])),
  }),
);
