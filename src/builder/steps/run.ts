/**
 * RUN: the command runs in the sandbox on the stage's merged root; what it changed
 * becomes the layer. ARG values are in the command's environment but are not
 * persisted; between an ENV and an ARG of one name, the later one is in force.
 */
import { posix } from "node:path";
import type { RunInstr } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { mutateRoot } from "../fs/step-root.js";
import { NAMESPACE_HINT, type Executor, type RemoteRunResult } from "../sandbox/index.js";
import { addHistory, addLayer, expansionEnv, shellOf, workdirOf, type LayerRecord, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import { resolveUser } from "../users.js";
import { parseMounts, type MountSpec } from "../mounts.js";
import { prepareRunMounts } from "../run-mounts.js";
import { type ErrorCode, OcibuildError } from "../../errors.js";
import { chmod, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { RunMount } from "../sandbox/index.js";
import { PROXY_ARGS } from "../../dockerfile/index.js";

/** The shebang line of a heredoc body, if any ("#!/usr/bin/env python3"). */
function shebang(content: string): string | undefined {
  return content.startsWith("#!") ? content.slice(0, content.indexOf("\n") < 0 ? undefined : content.indexOf("\n")) : undefined;
}

/** Where a sole heredoc with a shebang is put to be run as a script. */
export const HEREDOC_SCRIPT_DIR = "/dev/pipes";

/**
 * The command a RUN executes, as BuildKit runs it: exec form as is; shell form
 * through SHELL; a RUN that is only a heredoc runs its body with the shell (or,
 * with a shebang, as a script); heredocs after a command are given to the shell
 * with their bodies, so it feeds them to the command as here-documents.
 */
export function runArgs(state: StageState, instr: RunInstr): string[] {
  if (instr.command.form === "exec") return [...instr.command.args];
  const text = instr.command.text;
  const shell = shellOf(state);
  if (instr.heredocs.length === 0) return [...shell, text];
  const sole = instr.heredocs.length === 1 && /^<<-?(["']?)([A-Za-z0-9_.-]+)\1$/.test(text.trim());
  if (sole) {
    const h = instr.heredocs[0]!;
    if (shebang(h.content)) return [`${HEREDOC_SCRIPT_DIR}/${h.name}`];
    return [...shell, h.content];
  }
  const script = [text, ...instr.heredocs.map((h) => `${h.content}${h.content.endsWith("\n") || h.content === "" ? "" : "\n"}${h.name}`)].join("\n");
  return [...shell, script];
}

type Fail = (code: ErrorCode, msg: string, hint?: string) => Error;

/** RUN --security and --network as given (or the build's default), checked against the entitlements and the executor. */
function runFlags(instr: RunInstr, ctx: StepContext, mountSpecs: MountSpec[], fail: Fail): { security: "sandbox" | "insecure"; network: "default" | "none" | "host" } {
  const security = instr.security ?? "sandbox";
  if (security !== "sandbox" && security !== "insecure") throw fail("DOCKERFILE_INVALID_SECURITY", `invalid RUN --security=${security} (sandbox or insecure)`);
  if (security === "insecure" && !ctx.allow.has("security.insecure")) {
    throw fail("BUILD_ENTITLEMENT_REQUIRED", "RUN --security=insecure needs the security.insecure entitlement", "pass --allow security.insecure if you trust this Dockerfile");
  }
  const remoteUnsupported = ctx.executor.runRemote ? mountSpecs.find((m) => m.type === "bind" || m.type === "ssh") : undefined;
  if (remoteUnsupported) throw fail("BUILD_UNSUPPORTED", `RUN --mount=type=${remoteUnsupported.type} is not supported with the ${ctx.executor.name} executor yet (tmpfs, cache and secret are)`);
  const network = instr.network ?? ctx.defaultNetwork;
  if (network !== "default" && network !== "none" && network !== "host") throw fail("DOCKERFILE_INVALID_NETWORK", `invalid RUN --network=${network} (default, none or host)`);
  if (network === "host" && !ctx.allow.has("network.host")) {
    throw fail("BUILD_ENTITLEMENT_REQUIRED", "RUN --network=host needs the network.host entitlement", "pass --allow network.host if you trust this Dockerfile with the host's network (its loopback services included)");
  }
  return { security, network };
}

export async function runStep(state: StageState, instr: RunInstr, ctx: StepContext, step: number): Promise<StageState> {
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail: Fail = (code, msg, hint) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  let mountSpecs: MountSpec[];
  try {
    mountSpecs = parseMounts(instr.mounts);
  } catch (e) {
    throw fail((e as OcibuildError).code ?? "DOCKERFILE_INVALID_MOUNT", (e as Error).message);
  }
  const { security, network } = runFlags(instr, ctx, mountSpecs, fail);
  const avail = await ctx.executor.available();
  if (!avail.ok) throw fail("SANDBOX_UNAVAILABLE", `cannot run RUN steps: ${avail.reason}`, ctx.executor.runRemote ? undefined : NAMESPACE_HINT);
  if (avail.note !== undefined) ctx.emit({ type: "log", level: "warn", message: `sandbox: ${avail.note}` });

  const args = runArgs(state, instr);
  // Build args in force are visible to RUN (not persisted), over an earlier ENV of their name.
  const runEnv = expansionEnv(state);
  const envList = Object.entries(runEnv).map(([k, v]) => `${k}=${v}`);
  const cwd = posix.resolve("/", workdirOf(state));
  const stage = ctx.current?.stage ?? "";
  const onOutput = (stream: "stdout" | "stderr", chunk: Buffer) => ctx.emit({ type: "output", stage, step, stream, text: chunk.toString("utf8") });
  const failed = (result: { exitCode: number; signal?: string; tail: string }) => {
    const cmd = instr.command.form === "exec" ? JSON.stringify(instr.command.args) : instr.command.text;
    const tail = result.tail.trim() === "" ? "" : `\n--- last lines of output ---\n${result.tail}`;
    return fail("BUILD_RUN_FAILED", `RUN ${cmd} failed with exit code ${result.exitCode}${result.signal ? ` (${result.signal})` : ""}${tail}`);
  };
  // Never run a step without what it asked for: the remote executor does not send privileges yet.
  if (ctx.executor.runRemote && security === "insecure") throw fail("BUILD_UNSUPPORTED", `RUN --security=insecure is not supported with the ${ctx.executor.name} executor yet`);
  if (ctx.executor.runRemote && args[0]?.startsWith(`${HEREDOC_SCRIPT_DIR}/`)) {
    throw fail("BUILD_UNSUPPORTED", `a RUN heredoc with a #! line is not supported with the ${ctx.executor.name} executor yet`, "drop the #! line to run the heredoc with the shell");
  }
  const layer = ctx.executor.runRemote
    ? await runRemoteStep(ctx.executor.runRemote.bind(ctx.executor), state, ctx, { args, envList, cwd, network, onOutput, failed, text: instr.original, mounts: mountSpecs }).catch((e: unknown) => {
        // Mount and secret problems are about this Dockerfile line.
        throw e instanceof OcibuildError && /^BUILDKIT_(MOUNT|SECRET)_/.test(e.code) ? fail(e.code, e.message, e.hint) : e;
      })
    : await mutateRoot(state, ctx, async (root) => {
        const user = await resolveUser(root, state.config.User);
        const prepared = await prepareRunMounts(mountSpecs, state, ctx).catch((e: unknown) => {
          throw e instanceof OcibuildError ? fail(e.code, e.message, e.hint) : e;
        });
        try {
          const extra = [...prepared.mounts, ...(await heredocScripts(instr, ctx))];
          const result = await ctx.executor.run({
            root,
            args,
            env: [...envList, ...Object.entries(prepared.env).map(([k, v]) => `${k}=${v}`)],
            cwd,
            uid: user.uid,
            gid: user.gid,
            additionalGids: user.additionalGids,
            home: user.home,
            network,
            privileged: security === "insecure",
            extraMounts: extra,
            signal: ctx.signal,
            onOutput,
          }).catch((e: unknown) => {
            // A network the step cannot have is about this Dockerfile line.
            throw e instanceof OcibuildError && e.code.startsWith("SANDBOX_NETWORK_") ? fail(e.code, e.message, e.hint) : e;
          });
          if (result.exitCode !== 0) throw failed(result);
          return { exclude: result.createdPaths };
        } finally {
          await prepared.release();
        }
      });
  // History shows the command, with the build args it saw (not proxy args), as docker does.
  const visibleArgs = Object.entries(state.args)
    .filter(([k]) => !PROXY_ARGS.includes(k))
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
  s: { args: string[]; envList: string[]; cwd: string; network: "default" | "none" | "host"; text: string; mounts: MountSpec[]; onOutput: (stream: "stdout" | "stderr", chunk: Buffer) => void; failed: (r: RemoteRunResult) => Error },
): Promise<LayerRecord | undefined> {
  const result = await runRemote({
    state,
    args: s.args,
    env: s.envList,
    cwd: s.cwd,
    user: state.config.User ?? "",
    network: s.network,
    description: s.text.replace(/\s+/g, " ").trim(),
    mounts: s.mounts,
    secrets: ctx.secrets,
    content: ctx.content,
    registry: ctx.registry,
    compression: ctx.compression,
    compressionLevel: ctx.compressionLevel,
    sourceDateEpoch: ctx.sourceDateEpoch,
    signal: ctx.signal,
    onOutput: s.onOutput,
    onLog: (message) => ctx.emit({ type: "log", level: "info", message }),
  });
  if (result.exitCode !== 0) throw s.failed(result);
  return result.layer;
}

/** A sole heredoc with a shebang is run as a script: its body, executable, bound at /dev/pipes/NAME. */
async function heredocScripts(instr: RunInstr, ctx: StepContext): Promise<RunMount[]> {
  const args = instr.command.form === "shell" && instr.heredocs.length === 1 && /^<<-?(["']?)([A-Za-z0-9_.-]+)\1$/.test(instr.command.text.trim());
  const h = instr.heredocs[0];
  if (!args || !h || !shebang(h.content)) return [];
  await mkdir(ctx.scratchDir, { recursive: true });
  const dir = await mkdtemp(join(ctx.scratchDir, "heredoc-"));
  const file = join(dir, h.name);
  await writeFile(file, h.content);
  await chmod(file, 0o755);
  return [{ type: "bind", source: file, target: `${HEREDOC_SCRIPT_DIR}/${h.name}`, readonly: true }];
}
