/** One instruction -> the step that executes it. */
import type { Instruction } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import type { StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { argStep, type ArgSources } from "./arg.js";
import { configStep } from "./config.js";
import { copyStep } from "./copy.js";
import { runStep } from "./run.js";
import { workdirStep } from "./workdir.js";

export async function executeStep(state: StageState, instr: Instruction, ctx: StepContext, args: ArgSources, step: number): Promise<StageState> {
  switch (instr.kind) {
    case "run":
      return runStep(state, instr, ctx, step);
    case "copy":
    case "add":
      return copyStep(state, instr, ctx);
    case "workdir":
      return workdirStep(state, instr, ctx);
    case "arg":
      return argStep(state, instr, args);
    case "from":
      throw dockerfileError("DOCKERFILE_MISPLACED_FROM", "FROM inside a stage", { file: ctx.file, lines: [...ctx.lines] }, instr.range.startLine);
    default:
      return configStep(state, instr, ctx);
  }
}
