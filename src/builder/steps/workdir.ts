/**
 * WORKDIR (expanded): relative paths join the previous working directory; the directory is
 * created (owned by the current USER with BuildKit's rule for file owners, see fileOwner)
 * when it does not exist, which makes a layer; otherwise only the config changes.
 */
import { lchown } from "node:fs/promises";
import { posix } from "node:path";
import type { WorkdirInstr } from "../../dockerfile/index.js";
import { mutateRoot } from "../fs/step-root.js";
import { resolveDirInRoot } from "../fs/path.js";
import { addHistory, addLayer, withConfig, workdirOf, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { fileOwner } from "../users.js";

export async function workdirStep(state: StageState, instr: WorkdirInstr, ctx: StepContext): Promise<StageState> {
  const dir = posix.resolve(workdirOf(state), instr.path);
  const next = withConfig(state, { WorkingDir: dir });
  const text = `WORKDIR ${dir}`;
  const comps = dir.split("/").filter((c) => c !== "");
  const layer = await mutateRoot(next, ctx, async (root) => {
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
  const entry = { created_by: text, comment: "ocibuild.dockerfile.v0" };
  return layer ? addLayer(next, layer, entry) : addHistory(next, { ...entry, empty_layer: true });
}
