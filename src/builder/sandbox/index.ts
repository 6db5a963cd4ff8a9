/**
 * The RUN executor interface. An executor runs one command inside a prepared,
 * writable root filesystem (the merged overlay of a stage) and reports how it
 * ended. It never decides what the change means: the caller snapshots the root
 * afterwards (src/builder/fs/snapshot.ts), excluding `RunResult.createdPaths`.
 */
import { StringDecoder } from "node:string_decoder";
import type { LayerCompression } from "../../oci/layer-compression.js";
import type { OciLayout } from "../../oci/layout.js";
import type { RegistryClient } from "../../oci/registry/index.js";
import type { MountSpec } from "../mounts.js";
import type { LayerRecord, StageState } from "../stage-state.js";

export interface RunMount {
  type: "bind" | "tmpfs";
  /** Host path (bind only). */
  source?: string;
  /** Absolute path inside the root. */
  target: string;
  readonly?: boolean;
  /** tmpfs only: size limit in bytes. */
  size?: number;
}

export interface RunSpec {
  /** The merged rootfs (writable). */
  root: string;
  /** argv, already including the shell for shell form. */
  args: string[];
  /** KEY=VALUE. PATH and HOME are added as Docker does when missing. */
  env: string[];
  /** Absolute working directory inside the root; created if missing, owned by uid:gid. */
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  /** HOME to set when `env` has none (from resolveUser); defaults to "/root" for uid 0, else "/". */
  home?: string;
  network: "default" | "none" | "host";
  hostname?: string;
  signal?: AbortSignal;
  onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  /** For RUN --mount. */
  extraMounts?: RunMount[];
  /** RUN --security=insecure: every capability (the caller checks that it was allowed). */
  privileged?: boolean;
  /** The root is mounted read-only (`run --read-only`); the mounts on it (/proc, /dev, tmpfs, binds) keep their own mode. */
  readOnlyRoot?: boolean;
  /** The command's standard input: this process's ("inherit") or a stream piped in; default none (/dev/null). */
  stdin?: "inherit" | NodeJS.ReadableStream;
  /** The command gets this process's terminal (stdin, stdout and stderr inherited, no new session): `run -t`. `onOutput` then sees nothing. */
  tty?: boolean;
  /** Called once the sandbox runs, with a way to signal the command (`run` forwards Ctrl-C and SIGTERM through it). */
  onStart?: (control: SandboxControl) => void;
}

/** A running sandbox, as `RunSpec.onStart` gets it. */
export interface SandboxControl {
  /** Host pid of the sandbox's first process (bwrap's init with a PID namespace, else the command). */
  readonly pid: number;
  /** Send a signal to the command (the child of bwrap's init with a PID namespace). */
  kill(signal: NodeJS.Signals): void;
}

export interface RunResult {
  /** Exit status of the command (128+n when it died of signal n inside the sandbox). */
  exitCode: number;
  /** Set when the sandbox itself was killed (abort): the signal name. */
  signal?: string;
  /** The last ~40 lines of combined output, for error messages. */
  tail: string;
  /**
   * Root-relative paths ("etc", "etc/resolv.conf", "proc") that did not exist in the
   * root before the run and were created only as mount points. Pass them to
   * snapshotChanges' `exclude` so they do not end up in the layer.
   */
  createdPaths: string[];
}

/**
 * One RUN for an executor that works on images rather than on a local root (the
 * remote BuildKit executor): it gets the step's input layers and returns the layer
 * the command produced, already in the build's content store, its digest and
 * DiffID checked.
 */
export interface RemoteRunSpec {
  /** The stage state before the step: platform, config, and the layers so far. */
  state: StageState;
  args: string[];
  /** KEY=VALUE (PATH added when missing; HOME left to the executor, which resolves the user). */
  env: string[];
  cwd: string;
  /** The image config's User as written ("" for root); resolved by the executor in the root. */
  user: string;
  network: "default" | "none" | "host";
  /** The step as shown in progress ("RUN ..."). */
  description: string;
  /** RUN --mount specs; the executor provides what it can and refuses the rest by name. */
  mounts?: readonly MountSpec[];
  /** --secret values by id, for secret mounts (served to the runtime, never written anywhere). */
  secrets?: ReadonlyMap<string, Buffer>;
  content: OciLayout;
  registry: RegistryClient;
  /** For the layer written into `content` (as the local path writes its layers). */
  compression?: LayerCompression;
  compressionLevel?: number;
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  onOutput?: (stream: "stdout" | "stderr", chunk: Buffer) => void;
  onLog?: (message: string) => void;
}

export interface RemoteRunResult {
  exitCode: number;
  signal?: string;
  tail: string;
  /** The new layer; undefined when the command changed nothing. */
  layer?: LayerRecord;
}

export interface Availability {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
  /** Something the build says once when it runs RUN steps (a weaker sandbox than usual). */
  note?: string;
}

/** Where no namespace can be made: the two ways out, for errors about it. */
export const NAMESPACE_HINT =
  "use --executor buildkit with a BuildKit daemon, or allow user namespaces: in Docker or podman run with " +
  "--security-opt seccomp=unconfined --security-opt apparmor=unconfined (and systempaths=unconfined or unmask=ALL to unmask /proc); " +
  "in Kubernetes set the container's securityContext seccompProfile and appArmorProfile to Unconfined (README: Rootless builds)";

export interface Executor {
  readonly name: string;
  available(): Promise<Availability>;
  run(spec: RunSpec): Promise<RunResult>;
  /** When present, RUN uses this instead of `run` and never prepares a local root. */
  runRemote?(spec: RemoteRunSpec): Promise<RemoteRunResult>;
}

/** Docker's default PATH for a Linux container when the image sets none. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The environment a command sees, as Docker builds it: `env` as given, plus PATH
 * and HOME when missing (HOME from passwd, "/root" for root, "/" otherwise).
 */
export function effectiveEnv(spec: Pick<RunSpec, "env" | "uid" | "home">): string[] {
  const out = [...spec.env];
  const has = (k: string) => out.some((e) => e.startsWith(`${k}=`));
  if (!has("PATH")) out.push(`PATH=${DEFAULT_PATH}`);
  if (!has("HOME")) out.push(`HOME=${spec.home ?? (spec.uid === 0 ? "/root" : "/")}`);
  return out;
}

/** Keeps the last `maxLines` lines of a byte stream (for error messages). */
export class OutputTail {
  private lines: string[] = [];
  private partial = "";
  /** Keeps a UTF-8 character split across two chunks whole. */
  private readonly decoder = new StringDecoder("utf8");
  constructor(private readonly maxLines = 40) {}
  push(chunk: Buffer): void {
    const text = this.partial + this.decoder.write(chunk);
    const parts = text.split("\n");
    this.partial = parts.pop() ?? "";
    for (const l of parts) this.lines.push(l);
    if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
    if (this.partial.length > 64 * 1024) this.partial = this.partial.slice(-64 * 1024);
  }
  toString(): string {
    const all = this.partial ? [...this.lines, this.partial] : this.lines;
    return all.slice(-this.maxLines).join("\n");
  }
}
