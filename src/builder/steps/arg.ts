/**
 * ARG inside a stage: declares variables visible to the following instructions.
 * The value is the --build-arg when given, else a global ARG of the same name
 * (declared before the first FROM) when re-declared without a default, else the
 * default (expanded); an ARG with none of these stays unset.
 */
import { expandWord, type ArgInstr } from "../../dockerfile/index.js";
import { addHistory, expansionEnv, type StageState } from "../stage-state.js";

export interface ArgSources {
  buildArgs: Readonly<Record<string, string>>;
  globalArgs: Readonly<Record<string, string>>;
  /** Names of build args that were consumed (for the unused-build-arg warning). */
  used: Set<string>;
}

export function argStep(state: StageState, instr: ArgInstr, src: ArgSources): StageState {
  const args: Record<string, string> = { ...state.args };
  const shown: string[] = [];
  for (const { key, value } of instr.args) {
    let v: string | undefined;
    if (Object.hasOwn(src.buildArgs, key)) {
      v = src.buildArgs[key];
      src.used.add(key);
    } else if (value !== undefined) v = expandWord(value, expansionEnv({ ...state, args }));
    else if (Object.hasOwn(src.globalArgs, key)) v = src.globalArgs[key];
    if (v !== undefined) {
      args[key] = v;
      shown.push(`${key}=${v}`);
    } else {
      delete args[key];
      shown.push(key);
    }
  }
  return addHistory({ ...state, args }, { created_by: `ARG ${shown.join(" ")}`, comment: "ocibuild.dockerfile.v0", empty_layer: true });
}
