/** One instruction -> the step that knows it: the dispatcher and the cache wrapper ask this table. */
import type { FromInstr, Instruction } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { argStep } from "./arg.js";
import { configStep } from "./config.js";
import { copyStep } from "./copy.js";
import { runStep } from "./run.js";
import type { Step } from "./step.js";
import { workdirStep } from "./workdir.js";

export type { KeySources, Step, StepEnv, StepKeyInputs, StepPlan } from "./step.js";
export type { ArgSources } from "./arg.js";

/** FROM starts a stage and never reaches its steps (ONBUILD FROM is refused when parsed); one given as a step is an error. */
const misplacedFrom: Step<FromInstr> = {
  layered: false,
  async plan(_state, instr, env) {
    throw dockerfileError("DOCKERFILE_MISPLACED_FROM", "FROM inside a stage", { file: env.ctx.file, lines: [...env.ctx.lines] }, instr.range.startLine);
  },
};

type StepTable = { readonly [K in Instruction["kind"]]: Step<Extract<Instruction, { kind: K }>> };

const STEPS: StepTable = {
  from: misplacedFrom,
  run: runStep,
  copy: copyStep,
  add: copyStep,
  workdir: workdirStep,
  arg: argStep,
  env: configStep,
  label: configStep,
  expose: configStep,
  user: configStep,
  cmd: configStep,
  entrypoint: configStep,
  stopsignal: configStep,
  volume: configStep,
  healthcheck: configStep,
  shell: configStep,
  onbuild: configStep,
  maintainer: configStep,
};

export function stepFor(instr: Instruction): Step {
  return STEPS[instr.kind];
}
