/**
 * `ocibuild run`: start an image's command in the RUN sandbox. The image's layers
 * are extracted into the build's layer store (once per DiffID, shared with builds),
 * an overlay root is mounted over them in a scratch directory, the command runs in
 * bwrap with the image's Env, WorkingDir and User, and the upper layer is thrown
 * away at exit (or kept with `keep`). Nothing stays mounted, whatever way it ends.
 */
import { cp, mkdir, rename, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { OcibuildError, isOcibuildError, optionWords } from "../errors.js";
import type { EventSink } from "../builder/events.js";
import { openCacheDir, resolveCacheDir } from "../builder/cache-dir.js";
import { emulationError, emulationStatus, runsNatively } from "../builder/emulation.js";
import { LayerStore } from "../builder/fs/layer-store.js";
import { mountRoot, type MountedRoot } from "../builder/fs/overlay.js";
import { BwrapExecutor } from "../builder/sandbox/bwrap.js";
import type { RunMount, RunSpec, SandboxControl } from "../builder/sandbox/index.js";
import { resolveUser } from "../builder/users.js";
import { formatPlatform, hostPlatform, parsePlatform, type Platform } from "../oci/platform.js";
import { RegistryClient, type RegistryOptions } from "../oci/registry/index.js";
import { composeArgv, mergeEnv } from "./command.js";
import { healthArgv, runHealthcheck, type HealthReport } from "./healthcheck.js";
import { openRunImage, type RunImage } from "./image.js";
import { Stopper } from "./stopper.js";

export interface RunOptions {
  /** A registry reference, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE, or an image ID from `build --iidfile`. */
  image: string;
  /** Replaces the image's CMD. */
  command?: string[];
  /** Replaces the image's ENTRYPOINT (an empty list clears it) and drops its CMD. */
  entrypoint?: string[];
  /** KEY=VALUE entries set on top of the image's Env. */
  env?: string[];
  /** USER as Docker takes it (name, uid, name:group, uid:gid); default: the image's. */
  user?: string;
  /** Working directory; default: the image's WorkingDir, else "/". */
  workdir?: string;
  /** Bind mounts ({type: "bind", source, target, readonly}) and tmpfs mounts ({type: "tmpfs", target}). */
  mounts?: RunMount[];
  /** "host" (the default, as builds), "none" (only lo), or "default" (a namespace of its own, outbound through slirp4netns). */
  network?: "host" | "none" | "default";
  readOnly?: boolean;
  /** Give the command this process's terminal (`-t`). */
  tty?: boolean;
  /** The command's stdin (`-i`): this process's, or a stream. */
  stdin?: "inherit" | NodeJS.ReadableStream;
  platform?: Platform | string;
  /** Stop the command (as `signal` does) after this many seconds; the result says timedOut. */
  timeoutSeconds?: number;
  /** Seconds between the stop signal and SIGKILL (default 10, as docker stop). */
  stopTimeoutSeconds?: number;
  /** Move the container's upper layer (what the command changed) to this new directory at exit. */
  keep?: string;
  /** Run the image's HEALTHCHECK once the command started, report it, then stop the command. */
  healthcheck?: boolean;
  cacheDir?: string;
  registry?: RegistryOptions;
  /** The sandbox the command runs in (default: a BwrapExecutor with default options). */
  executor?: BwrapExecutor;
  /**
   * Stops the run: before the command starts, nothing more is done; once it runs, it
   * gets the signal named by the abort reason's `signal` field (SIGTERM, or the
   * image's StopSignal, when none), then SIGKILL after stopTimeoutSeconds.
   */
  signal?: AbortSignal;
  /** The command's output (not with tty, where it goes to the terminal). */
  onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  /** The build's event types: log, progress (pulls), output (stage "run"), error. */
  onEvent?: EventSink;
  /** Called once the command runs, with a way to send it signals. */
  onStart?: (control: SandboxControl) => void;
  /** Environment for the cache dir default (HOME, XDG_CACHE_HOME); default process.env. */
  hostEnv?: Record<string, string | undefined>;
}

export interface RunOutcome {
  /** The command's exit status (128+n when killed by signal n). */
  exitCode: number;
  /** The image's platform, as it ran. */
  platform: string;
  emulated: boolean;
  timedOut: boolean;
  /** With `healthcheck`: the verdict and the check's output. */
  health?: HealthReport;
  /** With `keep`: where the upper layer went. */
  kept?: string;
}

export async function runImage(opts: RunOptions): Promise<RunOutcome> {
  const emit: EventSink = opts.onEvent ?? (() => {});
  const env = opts.hostEnv ?? process.env;
  const warnings: string[] = [];
  const cacheDir = await resolveCacheDir(opts.cacheDir, env, (w) => warnings.push(w));
  for (const w of warnings) emit({ type: "log", level: "warn", message: w });
  const scratch = await openCacheDir(cacheDir, opts.cacheDir === undefined ? env : undefined);
  const registry = new RegistryClient({ ...opts.registry, env: opts.registry?.env ?? env });
  let mounted: MountedRoot | undefined;
  try {
    const platform = typeof opts.platform === "string" ? parsePlatform(opts.platform) : opts.platform;
    const image = await openRunImage(opts.image, { platform, cacheDir, registry, scratch, signal: opts.signal });
    if (opts.healthcheck && healthArgv(image.config.config?.Healthcheck?.Test ?? []) === undefined) {
      throw new OcibuildError("RUN_NO_HEALTHCHECK", `the image ${image.name} has no HEALTHCHECK`, {
        hint: `add a HEALTHCHECK instruction to its Dockerfile, or run without ${optionWords("healthcheck")}`,
      });
    }
    const emulated = await checkPlatform(image, emit);
    const lowers = await extractLayers(image, new LayerStore(join(cacheDir, "rootfs")), emit, opts.signal);
    mounted = await mountRoot(lowers, join(scratch, "root"), { signal: opts.signal, onLog: (m) => emit({ type: "log", level: "info", message: m }) });
    const outcome = await runIn(mounted.merged, image, opts, emit);
    await mounted.unmount();
    const kept = opts.keep !== undefined ? await keepUpper(mounted, opts.keep) : undefined;
    return { ...outcome, platform: formatPlatform(image.platform), emulated, ...(kept ? { kept } : {}) };
  } catch (e) {
    emit({ type: "error", code: isOcibuildError(e) ? e.code : "INTERNAL", message: e instanceof Error ? e.message : String(e) });
    throw e;
  } finally {
    await mounted?.unmount().catch(() => undefined);
    await registry.close().catch(() => {});
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Whether the image runs under qemu-user; fails when it would need an emulator that is not set up. */
async function checkPlatform(image: RunImage, emit: EventSink): Promise<boolean> {
  if (runsNatively(image.platform, hostPlatform())) return false;
  const status = await emulationStatus(image.platform);
  if (!status.ok) throw emulationError(image.platform, status);
  emit({ type: "log", level: "info", message: `${image.name} is ${formatPlatform(image.platform)}: running under qemu-user emulation` });
  return true;
}

async function extractLayers(image: RunImage, store: LayerStore, emit: EventSink, signal?: AbortSignal): Promise<string[]> {
  const dirs: string[] = [];
  for (const l of image.layers) {
    dirs.push(
      await store.ensureLayer(l.diffId, l.open, {
        mediaType: l.descriptor.mediaType,
        signal,
        layer: l.descriptor.digest,
        onWarning: (m) => emit({ type: "log", level: "warn", message: m }),
      }),
    );
  }
  return dirs;
}

/** The sandbox run itself, with the stop, timeout and health-check machinery around it. */
async function runIn(root: string, image: RunImage, opts: RunOptions, emit: EventSink): Promise<Omit<RunOutcome, "platform" | "emulated" | "kept">> {
  const cfg = image.config.config ?? {};
  const user = await resolveUser(root, opts.user ?? cfg.User, { signal: opts.signal });
  const spec: RunSpec = {
    root,
    args: composeArgv(cfg, { entrypoint: opts.entrypoint, command: opts.command }, image.name),
    env: mergeEnv(cfg.Env ?? [], opts.env ?? []),
    cwd: opts.workdir ?? (cfg.WorkingDir || "/"),
    uid: user.uid,
    gid: user.gid,
    additionalGids: user.additionalGids,
    home: user.home,
    network: opts.network ?? "host",
    extraMounts: (opts.mounts ?? []).map((m) => (m.source !== undefined ? { ...m, source: resolve(m.source) } : m)),
    readOnlyRoot: opts.readOnly,
    tty: opts.tty,
    stdin: opts.stdin,
    onOutput: (stream, chunk) => {
      opts.onOutput?.(stream, chunk);
      emit({ type: "output", stage: "run", step: 0, stream, text: chunk.toString("utf8") });
    },
  };
  const stopper = new Stopper(cfg.StopSignal, (opts.stopTimeoutSeconds ?? 10) * 1000, opts.signal, opts.timeoutSeconds);
  let health: Promise<HealthReport> | undefined;
  const ended = new AbortController();
  spec.signal = stopper.kill;
  spec.onStart = (control) => {
    stopper.started(control);
    opts.onStart?.(control);
    if (opts.healthcheck) {
      health = runHealthcheck(control, cfg.Healthcheck, spec, ended.signal);
      // Verdict given: the command has done its part.
      health.then(() => stopper.stop(), () => stopper.stop());
    }
  };
  try {
    const r = await (opts.executor ?? new BwrapExecutor()).runInRoot(spec).catch((e: unknown) => {
      if (isOcibuildError(e) && e.code === "SANDBOX_ABORTED" && stopper.startedAt !== undefined) return { exitCode: 137 };
      throw e;
    });
    ended.abort();
    const report = health ? await health : undefined;
    if (report) emit({ type: "log", level: report.status === "healthy" ? "info" : "warn", message: `health check: ${report.status}` });
    return { exitCode: r.exitCode, timedOut: stopper.timedOut, ...(report ? { health: report } : {}) };
  } finally {
    stopper.dispose();
  }
}

/** Move the upper layer (copy mode: the whole tree) to `dest`, a directory that must not exist yet. */
async function keepUpper(mounted: MountedRoot, dest: string): Promise<string> {
  const target = resolve(dest);
  await mkdir(resolve(target, ".."), { recursive: true });
  try {
    await rename(mounted.upper, target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST" || code === "ENOTEMPTY") throw new OcibuildError("RUN_KEEP_EXISTS", `${optionWords("keep", dest)}: the directory already exists`, { file: dest });
    if (code !== "EXDEV") throw e;
    await cp(mounted.upper, target, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true, errorOnExist: true });
  }
  return target;
}
