/**
 * RUN: the command runs in the sandbox on the stage's merged root; what it changed
 * becomes the layer. ARG values are in the command's environment but are not
 * persisted; ENV overrides ARG.
 */
import { posix } from "node:path";
import type { RunInstr } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { mutateRoot } from "../fs.js";
import type { Executor, RemoteRunResult } from "../sandbox/index.js";
import { addHistory, addLayer, envRecord, shellOf, workdirOf, type LayerRecord, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { resolveUser } from "../users.js";
import { PROXY_ARGS } from "../../dockerfile/index.js";

export function runArgs(state: StageState, instr: RunInstr): string[] {
  return instr.command.form === "exec" ? [...instr.command.args] : [...shellOf(state), instr.command.text];
}

export async function runStep(state: StageState, instr: RunInstr, ctx: StepContext, step: number): Promise<StageState> {
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail = (code: string, msg: string, hint?: string) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  if (instr.mounts.length > 0) throw fail("BUILD_UNSUPPORTED", "RUN --mount is not supported yet");
  if (instr.heredocs.length > 0) throw fail("BUILD_UNSUPPORTED", "RUN with a heredoc is not supported yet");
  if (instr.security !== undefined && instr.security !== "sandbox") throw fail("BUILD_UNSUPPORTED", `RUN --security=${instr.security} is not supported`);
  const network = instr.network ?? "default";
  if (network !== "default" && network !== "none" && network !== "host") throw fail("DOCKERFILE_INVALID_NETWORK", `invalid RUN --network=${network} (default, none or host)`);
  const avail = await ctx.executor.available();
  if (!avail.ok) throw fail("SANDBOX_UNAVAILABLE", `cannot run RUN steps: ${avail.reason}`);

  const args = runArgs(state, instr);
  const env = envRecord(state);
  // Build args are visible to RUN (not persisted); ENV wins over ARG.
  const runEnv: Record<string, string> = { ...state.args, ...env };
  const envList = Object.entries(runEnv).map(([k, v]) => `${k}=${v}`);
  const cwd = posix.resolve("/", workdirOf(state));
  const stage = ctx.current?.stage ?? "";
  const onOutput = (stream: "stdout" | "stderr", chunk: Buffer) => ctx.emit({ type: "output", stage, step, stream, text: chunk.toString("utf8") });
  const failed = (result: { exitCode: number; signal?: string; tail: string }) => {
    const cmd = instr.command.form === "exec" ? JSON.stringify(instr.command.args) : instr.command.text;
    const tail = result.tail.trim() === "" ? "" : `\n--- last lines of output ---\n${result.tail}`;
    return fail("BUILD_RUN_FAILED", `RUN ${cmd} failed with exit code ${result.exitCode}${result.signal ? ` (${result.signal})` : ""}${tail}`);
  };
  const layer = ctx.executor.runRemote
    ? await runRemoteStep(ctx.executor.runRemote.bind(ctx.executor), state, ctx, { args, envList, cwd, network, onOutput, failed, text: instr.original })
    : await mutateRoot(state, ctx, async (root) => {
        const user = await resolveUser(root, state.config.User);
        const result = await ctx.executor.run({
          root,
          args,
          env: envList,
          cwd,
          uid: user.uid,
          gid: user.gid,
          additionalGids: user.additionalGids,
          home: user.home,
          network,
          signal: ctx.signal,
          onOutput,
        });
        if (result.exitCode !== 0) throw failed(result);
        return { exclude: result.createdPaths };
      });
  // History shows the command, with the build args it saw (not proxy args), as docker does.
  const visibleArgs = Object.entries(state.args)
    .filter(([k]) => !PROXY_ARGS.includes(k) && !Object.hasOwn(env, k))
    .map(([k, v]) => `${k}=${v}`);
  const argPrefix = visibleArgs.length > 0 ? `|${visibleArgs.length} ${visibleArgs.join(" ")} ` : "";
  const entry = { created_by: `RUN ${argPrefix}${args.join(" ")} # ocibuild`, comment: "ocibuild.dockerfile.v0" };
  return layer ? addLayer(state, layer, entry) : addHistory(state, { ...entry, empty_layer: true });
}

/**
 * An executor that works on images (remote BuildKit): no local root is prepared;
 * the user is resolved by the executor inside the step's filesystem.
 */
async function runRemoteStep(
  runRemote: NonNullable<Executor["runRemote"]>,
  state: StageState,
  ctx: StepContext,
  s: { args: string[]; envList: string[]; cwd: string; network: "default" | "none" | "host"; text: string; onOutput: (stream: "stdout" | "stderr", chunk: Buffer) => void; failed: (r: RemoteRunResult) => Error },
): Promise<LayerRecord | undefined> {
  const result = await runRemote({
    state,
    args: s.args,
    env: s.envList,
    cwd: s.cwd,
    user: state.config.User ?? "",
    network: s.network,
    description: s.text.replace(/\s+/g, " ").trim(),
    content: ctx.content,
    registry: ctx.registry,
    compressionLevel: ctx.compressionLevel,
    sourceDateEpoch: ctx.sourceDateEpoch,
    signal: ctx.signal,
    onOutput: s.onOutput,
    onLog: (message) => ctx.emit({ type: "log", level: "info", message }),
  });
  if (result.exitCode !== 0) throw s.failed(result);
  return result.layer;
}
