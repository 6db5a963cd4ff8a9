/**
 * WORKDIR (expanded): relative paths join the previous working directory; the directory is
 * created (owned by the current USER with BuildKit's rule for file owners, see fileOwner)
 * when it does not exist, which makes a layer; otherwise only the config changes. Its key
 * is the resolved directory and the USER that would own it.
 */
import { lchown } from "node:fs/promises";
import { posix } from "node:path";
import type { WorkdirInstr } from "../../dockerfile/index.js";
import { mutateRoot } from "../fs/step-root.js";
import { resolveDirInRoot } from "../fs/path.js";
import { withConfig, workdirOf, type LayerRecord, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { fileOwner } from "../users.js";
import { layerPlan, withStepResult, type Step } from "./step.js";

export const workdirStep: Step<WorkdirInstr> = {
  layered: true,
  async plan(state, instr, env) {
    const dir = posix.resolve(workdirOf(state), instr.path);
    const next = withConfig(state, { WorkingDir: dir });
    const text = `WORKDIR ${dir}`;
    return layerPlan(next, { instruction: text, user: state.config.User ?? "" }, text, async () =>
      withStepResult(next, await makeWorkdir(state, next, env.ctx), { created_by: text, comment: "ocibuild.dockerfile.v0" }),
    );
  },
};

/** The layer that makes `next`'s working directory when `state`'s tree lacks it. */
async function makeWorkdir(state: StageState, next: StageState, ctx: StepContext): Promise<LayerRecord | undefined> {
  const comps = workdirOf(next).split("/").filter((c) => c !== "");
  return mutateRoot(next, ctx, async (root) => {
    const existing = await resolveDirInRoot(root, comps).catch(() => null);
    if (existing) return;
    const user = state.config.User ? await fileOwner(root, state.config.User, { signal: ctx.signal }) : undefined;
    await resolveDirInRoot(root, comps, {
      create: true,
      onCreate: async (p) => {
        if (user) await lchown(p, user.uid, user.gid);
      },
    });
  });
}
