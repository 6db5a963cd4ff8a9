/**
 * The parts of one RUN on a BuildKit daemon that need no daemon: what the executor
 * refuses, the step as LLB, the Status stream followed into output and log lines,
 * and the check that the daemon's result extends the step's input by one layer.
 */
import { OcibuildError } from "../../../errors.js";
import type { StepContext } from "../../step-context.js";
import { DEFAULT_PATH, OutputTail, type RunStepSpec } from "../index.js";
import { execDefinition, type LlbDefinition } from "./llb.js";
import type { StatusResponse } from "./messages.js";
import { runNonce, type llbMounts, type RemoteMount } from "./mounts.js";

/** What the BuildKit executor uses of the build: its stores, registry, secrets and events; never a local root. */
export type BuildkitStepContext = Pick<StepContext, "content" | "registry" | "secrets" | "compression" | "compressionLevel" | "sourceDateEpoch" | "signal" | "emit">;

/** One RUN step as the BuildKit executor takes it: a RunStepSpec with only the build services it uses. */
export type BuildkitStepSpec = Omit<RunStepSpec, "ctx" | "mounts"> & { ctx: BuildkitStepContext; mounts?: readonly RemoteMount[] };

/** What the executor cannot do yet, refused by name before the daemon is asked: it never runs a step without what it asked for. */
export function unsupported(spec: BuildkitStepSpec, executor: string): OcibuildError | undefined {
  const mount = spec.mounts?.find((m) => m.type === "bind" || m.type === "ssh");
  if (mount) return new OcibuildError("BUILD_UNSUPPORTED", `RUN --mount=type=${mount.type} is not supported with the ${executor} executor yet (tmpfs, cache and secret are)`);
  if (spec.privileged) return new OcibuildError("BUILD_UNSUPPORTED", `RUN --security=insecure is not supported with the ${executor} executor yet`);
  if (spec.script) {
    return new OcibuildError("BUILD_UNSUPPORTED", `a RUN heredoc with a #! line is not supported with the ${executor} executor yet`, {
      hint: "drop the #! line to run the heredoc with the shell",
    });
  }
  return undefined;
}

/**
 * The step as LLB on `image` (undefined: scratch). PATH as Docker adds it; HOME and
 * the groups of the user are the daemon's (runc's) job. Our cache decided that this
 * step runs, so the daemon must not answer it from its own cache: the exec is marked
 * ignore_cache. The daemon however gives an op that ignores its cache fresh cache
 * mounts, so a step with a cache mount is made unique instead, by an optional secret
 * mount no one provides (skipped, invisible to the command, but part of the daemon's
 * cache key). `extra`: the step's mounts as llbMounts gives them.
 */
export function stepDefinition(spec: BuildkitStepSpec, image: string | undefined, extra: ReturnType<typeof llbMounts>): LlbDefinition {
  const hasCacheMount = extra.mounts.some((m) => m.type === "cache");
  return execDefinition({
    image,
    platform: spec.state.platform,
    args: spec.args,
    env: spec.env.some((e) => e.startsWith("PATH=")) ? [...spec.env] : [...spec.env, `PATH=${DEFAULT_PATH}`],
    cwd: spec.cwd,
    user: spec.state.config.User ?? "",
    network: spec.network === "default" ? "sandbox" : spec.network,
    description: spec.description,
    mounts: hasCacheMount ? [...extra.mounts, runNonce()] : extra.mounts,
    secretEnv: extra.secretEnv,
    ignoreCache: !hasCacheMount,
  });
}

/** The daemon's Status stream for one step: the command's output (kept as a tail), the daemon's own steps as log lines, once each. */
export class StatusFollower {
  readonly tail = new OutputTail();
  private readonly seen = new Set<string>();

  constructor(
    /** The exec op: its vertex is the command, whose logs are output, not log lines. */
    private readonly execDigest: string,
    private readonly onOutput: ((stream: "stdout" | "stderr", chunk: Buffer) => void) | undefined,
    private readonly onLog: (message: string) => void,
  ) {}

  onStatus(s: StatusResponse): void {
    for (const v of s.vertexes) {
      if (v.digest === this.execDigest || !v.name) continue;
      if (v.started && this.once(v.digest)) this.onLog(`buildkit: ${v.name}${v.cached ? " (cached)" : ""}`);
      if (v.error && this.once(`${v.digest} error`)) this.onLog(`buildkit: ${v.name}: ${v.error}`);
    }
    for (const l of s.logs) {
      if (l.msg.length === 0) continue;
      this.tail.push(l.msg);
      this.onOutput?.(l.stream === 2 ? "stderr" : "stdout", l.msg);
    }
    for (const w of s.warnings) this.onLog(`buildkit warning: ${w.short}`);
  }

  private once(key: string): boolean {
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    return true;
  }
}

/**
 * Where the step's new layer is in the daemon's result: its layers must be the
 * input's (`input`, DiffIDs) followed by at most one more. Undefined when the command
 * changed nothing.
 */
export function newLayerIndex(input: readonly string[], result: { ref: string; layers: number; diffIds: readonly string[] }): number | undefined {
  const { layers, diffIds } = result;
  const prefixOk = diffIds.length >= input.length && input.every((d, i) => diffIds[i] === d);
  if (!prefixOk || layers !== diffIds.length || layers > input.length + 1) {
    throw new OcibuildError("BUILDKIT_RESULT_MISMATCH", `the BuildKit daemon's result ${result.ref} does not extend the step's input by one layer`, {
      details: { input: [...input], output: [...diffIds] },
    });
  }
  return layers === input.length ? undefined : input.length;
}
