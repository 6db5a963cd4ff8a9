/**
 * RUN with bubblewrap: new mount, PID, IPC and UTS namespaces, the stage root
 * bind-mounted as "/", a fresh /proc whose host-wide knobs (/proc/sys, ...) are
 * read-only, an empty read-only /sys, a minimal /dev, the host's /etc/hosts and
 * /etc/resolv.conf read-only (bwrap-mounts.ts), /tmp as the image has it,
 * Docker's default capability set, --die-with-parent.
 *
 * Network: `default` is a network namespace of the step's own with outbound access
 * through slirp4netns (network.ts), as docker build gives RUN; `none` an empty one
 * (only lo); `host` the host's (the caller checks the network.host entitlement).
 *
 * Users: as root without a user namespace bwrap cannot change uid itself, and
 * a user namespace would record files as owned by the outside uid. So the
 * command is started through the host's setpriv(1), which the image need not
 * contain: setpriv, its libraries and the dynamic loader are bind-mounted into
 * the sandbox's private /dev tmpfs (never into the layer) and run through the
 * loader; setpriv switches to uid/gid/groups and execs the command from the
 * image.
 */
import { childProcess } from "../../builtins.js";
import { existsSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { chown, realpath } from "node:fs/promises";
import { basename, isAbsolute } from "node:path";
import type { Writable } from "node:stream";
import { OcibuildError, optionWords } from "../../errors.js";
import { runProcess } from "../../process.js";
import { which } from "../../which.js";
import { resolveDirInRoot } from "../fs/path.js";
import { probeBwrap, type BwrapAvailability } from "./bwrap-probe.js";
import { effectiveEnv, NAMESPACE_HINT, OutputTail, type Availability, type Executor, type RunResult, type RunSpec, type RunStepResult, type RunStepSpec } from "./index.js";
import { runLocalStep } from "./local-step.js";
import { procHardeningArgs, RESOLV_CONF, type SandboxExtras, sandboxMounts, splitComps } from "./bwrap-mounts.js";
import { startSlirp, type UserNetwork } from "./network.js";
import { sandboxControl } from "./control.js";

/** Docker's default capabilities for a container (and so for RUN). */
export const DOCKER_DEFAULT_CAPS = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

const HELPER_DIR = "/dev/.ocibuild";
/** bwrap's fds beyond the status pipe (3): the one it waits on before the command, the resolv.conf it mounts. */
const BLOCK_FD = 4;
const RESOLV_FD = 5;
const HOSTS_FD = 6;

export interface BwrapOptions {
  /** bwrap binary; default: found on the host PATH. */
  bwrap?: string;
  /** setpriv binary used to switch users; default: found on the host PATH. */
  setpriv?: string;
  /** Host files to bind read-only at the same path (default /etc/resolv.conf and /etc/hosts when present). */
  hostFiles?: string[];
  /** slirp4netns binary, for the default network; default: found on the host PATH. */
  slirp4netns?: string;
  /** unshare(1), which starts bwrap in a new network namespace; default: found on the host PATH. */
  unshare?: string;
  /** docker build's --add-host lines for every RUN's /etc/hosts: [hostname, ip]. */
  extraHosts?: readonly (readonly [string, string])[];
  /** docker build's --shm-size: bytes of a tmpfs at /dev/shm. */
  shmSize?: number;
  /** docker build's --ulimit: resource limits every RUN starts with (set by prlimit(1) on the sandbox). */
  ulimits?: readonly Ulimit[];
  /** prlimit(1), for ulimits; default: found on the host PATH. */
  prlimit?: string;
}

/** One resource limit as docker's --ulimit gives it: prlimit's resource name, soft and hard ("unlimited" or a number). */
export interface Ulimit {
  name: string;
  soft: string;
  hard: string;
}

interface UserSwitch {
  /** bwrap arguments binding the helper files. */
  binds: string[];
  /** argv prefix that runs setpriv through the host's loader. */
  prefix: string[];
}

export class BwrapExecutor implements Executor {
  readonly name = "bwrap";
  private readonly bwrapPath: string | undefined;
  private readonly setprivPath: string | undefined;
  private readonly hostFiles: string[];
  private readonly slirp4netnsPath: string | undefined;
  private readonly unsharePath: string | undefined;
  private readonly extras: SandboxExtras;
  private readonly ulimits: readonly Ulimit[];
  private readonly prlimitPath: string | undefined;
  /** procHardeningArgs(), worked out once: which of runc's read-only and masked /proc entries this kernel has. */
  private readonly procArgs: string[];
  private availability?: Promise<BwrapAvailability>;
  private userSwitch?: Promise<UserSwitch>;

  constructor(opts: BwrapOptions = {}) {
    this.bwrapPath = which(opts.bwrap ?? "bwrap");
    this.setprivPath = which(opts.setpriv ?? "setpriv");
    this.hostFiles = (opts.hostFiles ?? [RESOLV_CONF, "/etc/hosts"]).filter((f) => existsSync(f));
    this.slirp4netnsPath = which(opts.slirp4netns ?? "slirp4netns");
    this.unsharePath = which(opts.unshare ?? "unshare");
    this.procArgs = procHardeningArgs();
    this.extras = { extraHosts: opts.extraHosts, shmSize: opts.shmSize };
    this.ulimits = opts.ulimits ?? [];
    this.prlimitPath = this.ulimits.length > 0 ? which(opts.prlimit ?? "prlimit") : undefined;
  }

  async available(): Promise<Availability> {
    const { processSandbox: _p, userNetwork: _u, ...shown } = await this.probe();
    return shown.ok ? shown : { ...shown, hint: NAMESPACE_HINT };
  }

  /** One RUN step: the stage's root mounted, the command run in it (runInRoot), its change snapshotted into the layer. */
  run(step: RunStepSpec): Promise<RunStepResult> {
    return runLocalStep(step, (spec) => this.runInRoot(spec));
  }

  /** Whether bwrap can make a sandbox here (bwrap-probe.ts), tried once. */
  private probe(): Promise<BwrapAvailability> {
    this.availability ??= probeBwrap(this.bwrapPath);
    return this.availability;
  }

  private prepareUserSwitch(): Promise<UserSwitch> {
    this.userSwitch ??= (async () => {
      const setpriv = this.setprivPath;
      if (setpriv === undefined) {
        throw new OcibuildError("SANDBOX_USER_SWITCH_UNSUPPORTED", "running as a non-root USER needs setpriv on the host (Debian: util-linux)");
      }
      const r = await runProcess("ldd", [setpriv]).catch((e: Error) => ({ code: -1, stdout: "", stderr: e.message }));
      if (r.code !== 0) throw new OcibuildError("SANDBOX_USER_SWITCH_UNSUPPORTED", `cannot list the libraries of ${setpriv}: ${r.stderr.trim()}`);
      const binds: string[] = ["--ro-bind", await realpath(setpriv), `${HELPER_DIR}/setpriv`];
      let loader: string | undefined;
      for (const line of r.stdout.split("\n")) {
        const t = line.trim();
        const arrow = /^(\S+)\s+=>\s+(\/\S+)/.exec(t);
        if (arrow) {
          binds.push("--ro-bind", await realpath(arrow[2]!), `${HELPER_DIR}/lib/${basename(arrow[1]!)}`);
          continue;
        }
        const interp = /^(\/\S+)\s+\(/.exec(t);
        if (interp) loader = await realpath(interp[1]!);
      }
      if (loader === undefined) {
        throw new OcibuildError("SANDBOX_USER_SWITCH_UNSUPPORTED", `${setpriv} is not a dynamically linked program this executor knows how to carry into the sandbox`);
      }
      binds.push("--ro-bind", loader, `${HELPER_DIR}/ld.so`);
      return { binds, prefix: [`${HELPER_DIR}/ld.so`, "--library-path", `${HELPER_DIR}/lib`, `${HELPER_DIR}/setpriv`] };
    })();
    return this.userSwitch;
  }

  /** slirp4netns and unshare(1), which RUN's default network needs. */
  private userNetworkTools(): { slirp4netns: string; unshare: string } {
    if (this.slirp4netnsPath === undefined || this.unsharePath === undefined) {
      const missing = this.slirp4netnsPath === undefined ? "slirp4netns" : "unshare (util-linux)";
      throw new OcibuildError("SANDBOX_NETWORK_UNAVAILABLE", `RUN's default network (a network namespace of its own, outbound through slirp4netns) needs ${missing} on the host (Debian: apt-get install slirp4netns)`, {
        hint: "install slirp4netns, or give the step --network=none",
      });
    }
    return { slirp4netns: this.slirp4netnsPath, unshare: this.unsharePath };
  }

  /** Run one command in a prepared, writable root (the caller snapshots it afterwards, without `createdPaths`). */
  async runInRoot(spec: RunSpec): Promise<RunResult> {
    spec.signal?.throwIfAborted();
    const avail = await this.probe();
    if (!avail.ok) throw new OcibuildError("SANDBOX_UNAVAILABLE", avail.reason ?? "bwrap is not usable here");
    if (spec.args.length === 0) throw new OcibuildError("SANDBOX_NO_COMMAND", "RUN needs a command");
    if (!isAbsolute(spec.cwd)) throw new OcibuildError("SANDBOX_BAD_CWD", `working directory "${spec.cwd}" is not absolute`);
    // Rootless mode where /dev/net/tun is closed to the user: RUN shares the user's view of
    // the host network (no CAP_NET_RAW over it), as probe() said once.
    const isolated = spec.network === "default" && avail.userNetwork !== false;
    const net = isolated ? this.userNetworkTools() : undefined;
    const network = spec.network === "default" && !isolated ? "host" : spec.network;
    const setup = await this.sandboxArgs({ ...spec, network }, avail.processSandbox !== false);
    const tail = new OutputTail(40);
    const outcome = await this.execute(setup, spec, tail, net, avail.processSandbox !== false);
    const { createdPaths } = setup;
    if (spec.signal?.aborted) throw new OcibuildError("SANDBOX_ABORTED", "RUN was interrupted", { cause: spec.signal.reason });
    if (outcome.networkError) throw outcome.networkError;
    if (outcome.sig !== null) return { exitCode: 128 + (signalNumber(outcome.sig) ?? 0), signal: outcome.sig, tail: tail.toString(), createdPaths };
    if (!outcome.status.includes('"child-pid"')) {
      throw new OcibuildError("SANDBOX_SETUP_FAILED", `bwrap could not set up the sandbox: ${outcome.stderrHead.trim() || `exit ${outcome.code}`}`, {
        details: { exitCode: outcome.code },
      });
    }
    const exit = /"exit-code"\s*:\s*(\d+)/.exec(outcome.status);
    const exitCode = exit ? Number(exit[1]) : (outcome.code ?? 1);
    // bwrap reports a command it could not exec with status 1; a shell (and setpriv) says 127.
    if (exitCode === 1 && /^bwrap: execvp /m.test(outcome.stderrHead)) return { exitCode: 127, tail: tail.toString(), createdPaths };
    return { exitCode, tail: tail.toString(), createdPaths };
  }

  /** bwrap's arguments for one RUN, the mount points it will create, and the data its fds carry. */
  private async sandboxArgs(spec: RunSpec, pidns: boolean): Promise<SandboxSetup> {
    // A terminal (`run -t`) stays the command's: no new session, which would detach it.
    const args: string[] = ["--die-with-parent", ...(spec.tty ? [] : ["--new-session"]), ...(pidns ? ["--unshare-pid"] : []), "--unshare-ipc", "--unshare-uts", "--json-status-fd", "3"];
    // none: bwrap's own empty namespace; default: the one unshare(1) made, connected before the command starts.
    if (spec.network === "none") args.push("--unshare-net");
    if (spec.network === "default") args.push("--block-fd", String(BLOCK_FD));
    if (spec.hostname !== undefined) args.push("--hostname", spec.hostname);
    const mounts = await sandboxMounts(spec, this.hostFiles, this.procArgs, { resolv: RESOLV_FD, hosts: HOSTS_FD }, pidns, this.extras);
    args.push(...mounts.args);
    // Last, once bwrap has made every mount point: only the root itself (not /proc, /dev, tmpfs, binds).
    if (spec.readOnlyRoot) args.push("--remount-ro", "/");

    // The working directory, created as Docker does (owned by the user).
    const isRoot = process.getuid?.() === 0;
    await resolveDirInRoot(spec.root, splitComps(spec.cwd), {
      create: true,
      onCreate: async (p) => {
        if (isRoot) await chown(p, spec.uid, spec.gid);
      },
    });
    args.push("--chdir", spec.cwd);

    let argv = spec.args;
    if (spec.uid !== 0 || spec.gid !== 0 || spec.additionalGids.length > 0) {
      const sw = await this.prepareUserSwitch();
      args.push(...sw.binds);
      const groups = spec.additionalGids.length > 0 ? `--groups=${spec.additionalGids.join(",")}` : "--clear-groups";
      argv = [...sw.prefix, `--reuid=${spec.uid}`, `--regid=${spec.gid}`, groups, "--", ...spec.args];
    }
    // As root, bwrap keeps every capability unless told otherwise: drop them all, then give Docker's set back.
    if (isRoot && spec.privileged) args.push("--cap-add", "ALL");
    else if (isRoot) {
      args.push("--cap-drop", "ALL");
      for (const c of DOCKER_DEFAULT_CAPS) args.push("--cap-add", c);
    }
    args.push("--", ...argv);
    return { args, createdPaths: mounts.createdPaths, resolvConf: mounts.resolvConf, hosts: mounts.hosts };
  }

  /**
   * prlimit(1) before bwrap when `ulimits` ask: bwrap has no flag for resource limits,
   * and limits set on it are inherited by the command (setuid-free, as root may raise them).
   */
  private prlimitPrefix(): string[] {
    if (this.ulimits.length === 0) return [];
    if (this.prlimitPath === undefined) {
      throw new OcibuildError("SANDBOX_UNAVAILABLE", `${optionWords("sandbox.ulimits")} needs prlimit (util-linux) on the PATH`, { hint: `install util-linux, or leave out ${optionWords("sandbox.ulimits")}` });
    }
    return [this.prlimitPath, ...this.ulimits.map((u) => `--${u.name}=${u.soft}:${u.hard}`), "--"];
  }

  /**
   * Run bwrap and wait for it. With the default network it is started through
   * `unshare --net` and blocks (--block-fd) until slirp4netns, attached to the
   * sandbox's process, has connected the namespace.
   */
  private execute(setup: SandboxSetup, spec: RunSpec, tail: OutputTail, net: { slirp4netns: string; unshare: string } | undefined, pidns: boolean): Promise<Outcome> {
    const { signal } = spec;
    const env: Record<string, string> = {};
    for (const kv of effectiveEnv(spec)) {
      const i = kv.indexOf("=");
      if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    const bwrap = [...this.prlimitPrefix(), this.bwrapPath!];
    const [cmd, ...cmdArgs] = net ? [net.unshare, "--net", "--", ...bwrap, ...setup.args] : [...bwrap, ...setup.args];
    return new Promise<Outcome>((resolve, reject) => {
      // fds 4 and 5 only when bwrap uses them (and closes them): the command inherits no others.
      const extra = net ? "pipe" : "ignore";
      const data = (v: string | undefined) => (v !== undefined ? "pipe" : "ignore");
      const stdin = spec.tty || spec.stdin === "inherit" ? "inherit" : spec.stdin !== undefined ? "pipe" : "ignore";
      const out = spec.tty ? "inherit" : "pipe";
      const child = childProcess().spawn(cmd!, cmdArgs, { env, stdio: [stdin, out, out, "pipe", extra, data(setup.resolvConf), data(setup.hosts)] });
      if (child.stdin && typeof spec.stdin === "object") {
        child.stdin.on("error", () => {});
        spec.stdin.pipe(child.stdin);
      }
      let status = "";
      let stderrHead = "";
      let network: UserNetwork | undefined;
      let networkError: Error | undefined;
      let started = false;
      const onAbort = () => child.kill("SIGKILL");
      signal?.addEventListener("abort", onAbort, { once: true });
      const fds = child.stdio as unknown as (Writable | null | undefined)[];
      const [block, resolvFd, hostsFd] = [fds[BLOCK_FD], fds[RESOLV_FD], fds[HOSTS_FD]];
      for (const w of [block, resolvFd, hostsFd]) w?.on("error", () => {});
      resolvFd?.end(setup.resolvConf);
      hostsFd?.end(setup.hosts);
      child.stdout?.on("data", (d: Buffer) => {
        tail.push(d);
        spec.onOutput?.("stdout", d);
      });
      child.stderr?.on("data", (d: Buffer) => {
        tail.push(d);
        if (stderrHead.length < 4096) stderrHead += d.toString("utf8");
        spec.onOutput?.("stderr", d);
      });
      const statusPipe = child.stdio[3] as NodeJS.ReadableStream;
      statusPipe.setEncoding("utf8");
      statusPipe.on("data", (d: string) => {
        status += d;
        const pid = /"child-pid"\s*:\s*(\d+)/.exec(status);
        if (pid !== null && !started) {
          started = true;
          spec.onStart?.(sandboxControl(Number(pid[1]), pidns));
        }
        if (net === undefined || network !== undefined || pid === null) return;
        // The sandbox's process, never unshare's: only it is certain to be in the new namespace.
        network = startSlirp(net.slirp4netns, Number(pid[1]));
        network.ready.then(
          () => block?.end("1"),
          (e: Error) => {
            networkError = e;
            child.kill("SIGKILL");
          },
        );
      });
      child.on("error", (e) => {
        signal?.removeEventListener("abort", onAbort);
        reject(new OcibuildError("SANDBOX_SPAWN_FAILED", `cannot start ${cmd}: ${e.message}`, { cause: e }));
      });
      child.on("close", (code, sig) => {
        signal?.removeEventListener("abort", onAbort);
        // slirp4netns is not waited for: closing its tap device takes the kernel ~30 ms here.
        void network?.stop();
        resolve({ code, sig, status, stderrHead, networkError });
      });
    });
  }
}

interface SandboxSetup {
  args: string[];
  createdPaths: string[];
  /** The step's /etc/resolv.conf (default network only), given to bwrap on RESOLV_FD. */
  resolvConf?: string;
  /** The step's /etc/hosts with --add-host lines, given to bwrap on HOSTS_FD. */
  hosts?: string;
}

interface Outcome {
  code: number | null;
  sig: NodeJS.Signals | null;
  status: string;
  stderrHead: string;
  networkError?: Error;
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return osConstants.signals[sig];
}
