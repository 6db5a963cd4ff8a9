/**
 * One RUN step on this host, for an executor that runs commands in a local root
 * (bubblewrap): the stage's writable merged root, the user resolved in it, the
 * step's mounts and heredoc script made ready, the command run, and what it
 * changed snapshotted into the layer (fs/step-root.ts). A command that fails leaves
 * no layer.
 */
import { chmod, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { mutateRoot } from "../fs/step-root.js";
import { prepareRunMounts } from "../run-mounts.js";
import type { StepContext } from "../step-context.js";
import { resolveUser } from "../users.js";
import type { RunMount, RunResult, RunSpec, RunStepResult, RunStepSpec } from "./index.js";

/** Runs one command in a prepared root (BwrapExecutor.runInRoot). */
export type RunInRoot = (spec: RunSpec) => Promise<RunResult>;

/** Thrown out of mutateRoot when the command failed, so that nothing is snapshotted. */
class CommandFailed extends Error {}

export async function runLocalStep(step: RunStepSpec, runInRoot: RunInRoot): Promise<RunStepResult> {
  let result: RunResult | undefined;
  try {
    const layer = await mutateRoot(step.state, step.ctx, async (root) => {
      result = await commandInRoot(root, step, runInRoot);
      if (result.exitCode !== 0) throw new CommandFailed();
      return { exclude: result.createdPaths };
    });
    return { ...outcome(result!), ...(layer ? { layer } : {}) };
  } catch (e) {
    if (e instanceof CommandFailed) return outcome(result!);
    throw e;
  }
}

function outcome(r: RunResult): RunStepResult {
  return r.signal !== undefined ? { exitCode: r.exitCode, signal: r.signal, tail: r.tail } : { exitCode: r.exitCode, tail: r.tail };
}

/** The command in the step's root, with its user, mounts and script; the mounts released afterwards. */
async function commandInRoot(root: string, step: RunStepSpec, runInRoot: RunInRoot): Promise<RunResult> {
  const { ctx } = step;
  const locate = step.locate ?? ((e: OcibuildError) => e);
  const user = await resolveUser(root, step.state.config.User);
  const prepared = await prepareRunMounts(step.mounts, step.state, ctx).catch((e: unknown) => {
    throw e instanceof OcibuildError ? locate(e) : e;
  });
  try {
    const script = step.script ? [await scriptMount(step.script, ctx)] : [];
    return await runInRoot({
      root,
      args: step.args,
      env: [...step.env, ...Object.entries(prepared.env).map(([k, v]) => `${k}=${v}`)],
      cwd: step.cwd,
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids,
      home: user.home,
      network: step.network,
      privileged: step.privileged,
      extraMounts: [...prepared.mounts, ...script],
      signal: ctx.signal,
      onOutput: step.onOutput,
    }).catch((e: unknown) => {
      // A network the step cannot have is about its line.
      throw e instanceof OcibuildError && e.code.startsWith("SANDBOX_NETWORK_") ? locate(e) : e;
    });
  } finally {
    await prepared.release();
  }
}

/** A heredoc run as a script: its body, executable, in the build's scratch space, bound read-only at its path. */
async function scriptMount(script: { path: string; content: string }, ctx: StepContext): Promise<RunMount> {
  await mkdir(ctx.scratchDir, { recursive: true });
  const dir = await mkdtemp(join(ctx.scratchDir, "heredoc-"));
  const file = join(dir, basename(script.path));
  await writeFile(file, script.content);
  await chmod(file, 0o755);
  return { type: "bind", source: file, target: script.path, readonly: true };
}
