/**
 * RUN: the build's executor runs the command on the stage (bubblewrap on its merged
 * root, or a BuildKit daemon on its image) and returns the layer of what it changed.
 * ARG values are in the command's environment but are not persisted; between an ENV
 * and an ARG of one name, the later one is in force.
 */
import { posix } from "node:path";
import { PROXY_ARGS, type RunInstr } from "../../dockerfile/index.js";
import { dockerfileError } from "../../dockerfile/diagnostics.js";
import { type ErrorCode, OcibuildError, optionWords } from "../../errors.js";
import { parseMounts, type MountSpec } from "../mounts.js";
import { addHistory, addLayer, envRecord, expansionEnv, shellOf, workdirOf, type StageState } from "../stage-state.js";
import type { StepContext } from "../step-context.js";
import type { KeyInputs } from "../../cache/key.js";
import { hashMatches } from "../fs/copy-tree.js";
import { selectSources } from "../sources.js";
import { layerPlan, sourceIdentity, type Step, type StepEnv } from "./step.js";

/** The shebang line of a heredoc body, if any ("#!/usr/bin/env python3"). */
function shebang(content: string): string | undefined {
  return content.startsWith("#!") ? content.slice(0, content.indexOf("\n") < 0 ? undefined : content.indexOf("\n")) : undefined;
}

/** The heredoc of a shell-form RUN that is only a heredoc (`RUN <<EOF`), if it is one. */
function soleHeredoc(instr: RunInstr): RunInstr["heredocs"][number] | undefined {
  if (instr.command.form !== "shell" || instr.heredocs.length !== 1) return undefined;
  return /^<<-?(["']?)([A-Za-z0-9_.-]+)\1$/.test(instr.command.text.trim()) ? instr.heredocs[0] : undefined;
}

/** A sole heredoc with a shebang, run as a script (at runArgs' first word). */
function heredocScript(instr: RunInstr): RunInstr["heredocs"][number] | undefined {
  const h = soleHeredoc(instr);
  return h && shebang(h.content) ? h : undefined;
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
  const sole = soleHeredoc(instr);
  if (sole) return shebang(sole.content) ? [`${HEREDOC_SCRIPT_DIR}/${sole.name}`] : [...shell, sole.content];
  const script = [text, ...instr.heredocs.map((h) => `${h.content}${h.content.endsWith("\n") || h.content === "" ? "" : "\n"}${h.name}`)].join("\n");
  return [...shell, script];
}

type Fail = (code: ErrorCode, msg: string, hint?: string) => Error;

/** RUN --security and --network as given (or the build's default), checked against the entitlements. */
function runFlags(instr: RunInstr, ctx: StepContext, fail: Fail): { security: "sandbox" | "insecure"; network: "default" | "none" | "host" } {
  const security = instr.security ?? "sandbox";
  if (security !== "sandbox" && security !== "insecure") throw fail("DOCKERFILE_INVALID_SECURITY", `invalid RUN --security=${security} (sandbox or insecure)`);
  if (security === "insecure" && !ctx.allow.has("security.insecure")) {
    throw fail("BUILD_ENTITLEMENT_REQUIRED", "RUN --security=insecure needs the security.insecure entitlement", `allow it with ${optionWords("allow", "security.insecure")} if you trust this Dockerfile`);
  }
  const network = instr.network ?? ctx.defaultNetwork;
  if (network !== "default" && network !== "none" && network !== "host") throw fail("DOCKERFILE_INVALID_NETWORK", `invalid RUN --network=${network} (default, none or host)`);
  if (network === "host" && !ctx.allow.has("network.host")) {
    throw fail("BUILD_ENTITLEMENT_REQUIRED", "RUN --network=host needs the network.host entitlement", `allow it with ${optionWords("allow", "network.host")} if you trust this Dockerfile with the host's network (its loopback services included)`);
  }
  return { security, network };
}

async function executeRun(state: StageState, instr: RunInstr, ctx: StepContext, step: number): Promise<StageState> {
  const loc = { file: ctx.file, lines: [...ctx.lines] };
  const fail: Fail = (code, msg, hint) => dockerfileError(code, msg, loc, instr.range.startLine, instr.range.endLine, { hint });
  let mountSpecs: MountSpec[];
  try {
    mountSpecs = parseMounts(instr.mounts);
  } catch (e) {
    throw fail((e as OcibuildError).code ?? "DOCKERFILE_INVALID_MOUNT", (e as Error).message);
  }
  const { security, network } = runFlags(instr, ctx, fail);
  const avail = await ctx.executor.available();
  if (!avail.ok) throw fail("SANDBOX_UNAVAILABLE", `cannot run RUN steps: ${avail.reason}`, avail.hint);
  if (avail.note !== undefined) ctx.emit({ type: "log", level: "warn", message: `sandbox: ${avail.note}` });

  const args = runArgs(state, instr);
  const script = heredocScript(instr);
  const stage = ctx.current?.stage ?? "";
  const result = await ctx.executor.run({
    state,
    args,
    // Build args in force are visible to RUN (not persisted), over an earlier ENV of their name.
    env: Object.entries(expansionEnv(state)).map(([k, v]) => `${k}=${v}`),
    cwd: posix.resolve("/", workdirOf(state)),
    network,
    privileged: security === "insecure",
    mounts: mountSpecs,
    ...(script ? { script: { path: args[0]!, content: script.content } } : {}),
    description: instr.original.replace(/\s+/g, " ").trim(),
    ctx,
    onOutput: (stream, chunk) => ctx.emit({ type: "output", stage, step, stream, text: chunk.toString("utf8") }),
    locate: (e) => fail(e.code, e.message, e.hint),
  });
  if (result.exitCode !== 0) {
    const cmd = instr.command.form === "exec" ? JSON.stringify(instr.command.args) : instr.command.text;
    const tail = result.tail.trim() === "" ? "" : `\n--- last lines of output ---\n${result.tail}`;
    throw fail("BUILD_RUN_FAILED", `RUN ${cmd} failed with exit code ${result.exitCode}${result.signal ? ` (${result.signal})` : ""}${tail}`);
  }
  // History shows the command, with the build args it saw (not proxy args), as docker does.
  const visibleArgs = Object.entries(state.args)
    .filter(([k]) => !PROXY_ARGS.includes(k))
    .map(([k, v]) => `${k}=${v}`);
  const argPrefix = visibleArgs.length > 0 ? `|${visibleArgs.length} ${visibleArgs.join(" ")} ` : "";
  const entry = { created_by: `RUN ${argPrefix}${args.join(" ")} # ocibuild`, comment: "ocibuild.dockerfile.v0" };
  return result.layer ? addLayer(state, result.layer, entry) : addHistory(state, { ...entry, empty_layer: true });
}

/**
 * RUN's key: the command as it runs, with its flags, and all it can see: the shell,
 * user, working directory, ENV and build args, the network, and what it mounts.
 */
export const runStep: Step<RunInstr> = {
  layered: true,
  async plan(state, instr, env) {
    const flags = [instr.network ? `--network=${instr.network}` : "", instr.security ? `--security=${instr.security}` : "", ...instr.mounts.map((m) => `--mount=${m}`)].filter(Boolean);
    const inputs = {
      ...(await mountKeyInputs(instr.mounts, state, env)),
      instruction: ["RUN", ...flags, JSON.stringify(runArgs(state, instr))].join(" "),
      shell: shellOf(state),
      user: state.config.User ?? "",
      workdir: workdirOf(state),
      env: envRecord(state),
      args: { ...state.args },
      network: instr.network ?? env.ctx.defaultNetwork,
    };
    const shown = `RUN ${instr.command.form === "exec" ? JSON.stringify(instr.command.args) : instr.command.text.replace(/\s+/g, " ").trim()}`;
    return layerPlan(state, inputs, shown, () => executeRun(state, instr, env.ctx, env.step));
  },
};

/**
 * What RUN --mount contributes to the key: the content of bind sources from the
 * context or a named local one (named so: "context 'src' file ..."), and the
 * identity of stages or images mounted from. Cache mounts,
 * tmpfs, secrets and ssh sockets never enter the key (their ids are in the text).
 */
async function mountKeyInputs(specs: readonly string[], state: StageState, env: StepEnv): Promise<Pick<KeyInputs, "files" | "source">> {
  if (specs.length === 0) return {};
  let parsed: MountSpec[];
  try {
    parsed = parseMounts(specs);
  } catch {
    return {}; // the step itself reports the bad spec with its line
  }
  const { ctx } = env;
  const files: Record<string, string> = {};
  const sources: string[] = [];
  for (const m of parsed) {
    if (m.type !== "bind" && !(m.type === "cache" && m.from !== undefined)) continue;
    const tree = m.from === undefined ? ctx.context : ctx.localContext?.(m.from);
    if (tree) {
      const matches = await selectSources(tree, m.source);
      const hashed = await hashMatches(tree, matches, env.keys.hashFile, { signal: ctx.signal });
      for (const [k, v] of Object.entries(hashed)) files[`mount ${m.target}: ${tree.keyPrefix ?? ""}${k}`] = v;
    } else sources.push(`${m.target}=${await sourceIdentity(m.from!, state, env)}`);
  }
  return { ...(Object.keys(files).length > 0 ? { files } : {}), ...(sources.length > 0 ? { source: sources.join(";") } : {}) };
}
