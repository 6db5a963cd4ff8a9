/**
 * The filesystem of a bubblewrap RUN sandbox: the stage root as "/", a fresh /proc
 * with the kernel's host-wide knobs read-only or masked (runc's defaults), a
 * read-only empty /sys, a minimal /dev (with a sized /dev/shm when asked), the host's
 * /etc/hosts (plus --add-host lines) and resolv.conf, and the step's RUN --mount
 * targets; every mount target checked inside the root. Mount points the step made
 * are left out of its layer, but for /dev, /proc and /sys (see RUNTIME_MOUNT_POINTS).
 */
import { statSync } from "node:fs";
import { chmod, lstat, mkdir, readFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { OcibuildError } from "../../errors.js";
import type { RunSpec } from "./index.js";
import { sandboxResolvConf } from "./network.js";

export const RESOLV_CONF = "/etc/resolv.conf";
export const HOSTS = "/etc/hosts";

/** What the build adds to every RUN sandbox (docker build's --add-host and --shm-size). */
export interface SandboxExtras {
  /** Lines added to the host's /etc/hosts: [hostname, ip]. */
  extraHosts?: readonly (readonly [string, string])[];
  /** Size in bytes of a tmpfs mounted at /dev/shm. */
  shmSize?: number;
}

/** The fds bwrap reads generated files from (--ro-bind-data). */
export interface DataFds {
  resolv: number;
  hosts: number;
}

/** The host's /etc/hosts with the extra lines, as docker writes --add-host (IP, a tab, the name). */
export async function sandboxHosts(extra: readonly (readonly [string, string])[]): Promise<string> {
  const own = await readFile(HOSTS, "utf8").catch(() => "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
  return `${own}${own.endsWith("\n") || own === "" ? "" : "\n"}${extra.map(([name, ip]) => `${ip}\t${name}\n`).join("")}`;
}

/**
 * runc's readonlyPaths: writable by real root, they change the host (sysctls, the
 * magic SysRq key, IRQ affinity, bus devices). Bound read-only from the host's /proc:
 * the same kernel objects, and a sysctl answers for the namespaces of whoever reads
 * it (the step's hostname, network, IPC), so what the step reads does not change.
 */
const PROC_READONLY = ["sys", "sysrq-trigger", "irq", "bus"];
/** runc's maskedPaths: kernel memory, keys, timers and hardware details. */
const PROC_MASKED = ["kcore", "keys", "timer_list", "latency_stats", "sched_debug", "scsi", "acpi"];

/**
 * bwrap arguments that make the kernel's host-wide files in the sandbox's /proc
 * read-only or empty, for the entries this kernel has (bwrap cannot create a missing
 * /proc entry to mount on). Files are masked with /dev/null, directories with a
 * read-only empty tmpfs.
 */
export function procHardeningArgs(): string[] {
  const args: string[] = [];
  const kind = (name: string) => {
    try {
      return statSync(`/proc/${name}`).isDirectory() ? "dir" : "file";
    } catch {
      return undefined;
    }
  };
  for (const name of PROC_READONLY) if (kind(name) !== undefined) args.push("--ro-bind", `/proc/${name}`, `/proc/${name}`);
  for (const name of PROC_MASKED) {
    const k = kind(name);
    if (k === "dir") args.push("--tmpfs", `/proc/${name}`, "--remount-ro", `/proc/${name}`);
    else if (k === "file") args.push("--ro-bind", "/dev/null", `/proc/${name}`);
  }
  return args;
}

export interface SandboxMounts {
  args: string[];
  /** Root-relative mount points bwrap will create (to leave out of the layer). */
  createdPaths: string[];
  /** The step's /etc/resolv.conf (default network only), for bwrap's --ro-bind-data. */
  resolvConf?: string;
  /** The step's /etc/hosts (with --add-host lines), for bwrap's --ro-bind-data. */
  hosts?: string;
}

export function splitComps(p: string): string[] {
  return p.split("/").filter((c) => c !== "" && c !== ".");
}

/**
 * Check a mount target inside the root. bwrap sets mounts up before it pivots
 * into the root, so a symlink on the way (a hostile layer's `proc -> /oldroot/tmp`)
 * would make it create or cover paths outside: such targets are refused.
 * Returns the root-relative paths bwrap will create, or "symlink".
 */
export async function inspectTarget(root: string, target: string): Promise<string[] | "symlink"> {
  const comps = splitComps(target);
  const created: string[] = [];
  let cur = root;
  for (let i = 0; i < comps.length; i++) {
    if (created.length > 0) {
      created.push(comps.slice(0, i + 1).join("/"));
      continue;
    }
    cur = join(cur, comps[i]!);
    const st = await lstat(cur).catch(() => null);
    if (st === null) created.push(comps.slice(0, i + 1).join("/"));
    else if (st.isSymbolicLink()) return "symlink";
    else if (i < comps.length - 1 && !st.isDirectory()) return "symlink";
  }
  return created;
}

/**
 * Where the OCI runtime mounts procfs, the /dev tmpfs and sysfs (a privileged step
 * too). In a root that lacks one, runc makes the mount point, a 0755 directory owned
 * by root, and BuildKit keeps it in the step's layer: its stub cleaner removes only
 * /etc/hosts, /etc/resolv.conf and the step's own RUN --mount targets (executor/
 * stubs.go, in v0.11.6 and in today's master alike). The layer gets the same
 * directories here.
 */
export const RUNTIME_MOUNT_POINTS: readonly string[] = ["dev", "proc", "sys"];

/** Make /NAME as runc would before the run (bwrap's own mkdir would follow the umask), or refuse a symlink there. */
async function runtimeMountPoint(root: string, name: string): Promise<void> {
  const st = await lstat(join(root, name)).catch(() => null);
  if (st?.isSymbolicLink() || (st !== null && !st.isDirectory())) {
    throw new OcibuildError("SANDBOX_UNSAFE_MOUNT", `cannot mount /${name}: the image has a symlink or a non-directory on that path`, {
      details: { target: `/${name}` },
      hint: "a mount target must be a real path in the image; a symlink there could point outside the root",
    });
  }
  if (st !== null) return;
  await mkdir(join(root, name), { mode: 0o755 });
  await chmod(join(root, name), 0o755);
}

/**
 * The mounts of one RUN. `hostFiles` are bound read-only at their own path (resolv.conf,
 * with the default network, as data given on `resolvFd`); `procArgs` from
 * procHardeningArgs() are left out for a privileged step, which sees /proc and /sys as
 * Docker's privileged containers do.
 */
export async function sandboxMounts(spec: RunSpec, hostFiles: readonly string[], procArgs: readonly string[], fds: DataFds, freshProc = true, extras: SandboxExtras = {}): Promise<SandboxMounts> {
  const root = spec.root;
  // Without a PID namespace of its own (a masked /proc: see BwrapExecutor.probe) RUN sees the container's /proc.
  const args = ["--bind", root, "/", ...(freshProc ? ["--proc", "/proc"] : ["--bind", "/proc", "/proc"]), "--dev", "/dev"];
  // bwrap's /dev has an unlimited /dev/shm directory; docker's --shm-size is a tmpfs of that size.
  if (extras.shmSize !== undefined) args.push("--size", String(extras.shmSize), "--tmpfs", "/dev/shm");
  const created = new Set<string>();
  const requireTarget = async (target: string, what: string) => {
    const r = await inspectTarget(root, target);
    if (r === "symlink") {
      throw new OcibuildError("SANDBOX_UNSAFE_MOUNT", `cannot mount ${what} at ${target}: the image has a symlink or a non-directory on that path`, {
        details: { target },
        hint: "a mount target must be a real path in the image; a symlink there could point outside the root",
      });
    }
    for (const c of r) created.add(c);
  };
  for (const name of RUNTIME_MOUNT_POINTS) await runtimeMountPoint(root, name);
  if (!spec.privileged) args.push(...procArgs, "--tmpfs", "/sys", "--remount-ro", "/sys");
  let resolvConf: string | undefined;
  let hosts: string | undefined;
  const extraHosts = extras.extraHosts ?? [];
  for (const f of extraHosts.length > 0 && !hostFiles.includes(HOSTS) ? [...hostFiles, HOSTS] : hostFiles) {
    // The image's own resolv.conf/hosts as a symlink (-> ../run/...) or under one: leave it alone.
    const r = await inspectTarget(root, f);
    if (r === "symlink") continue;
    const inRoot = await lstat(join(root, f)).catch(() => null);
    if (inRoot !== null && !inRoot.isFile()) continue;
    for (const c of r) created.add(c);
    if (spec.network === "default" && f === RESOLV_CONF) {
      // Read at each RUN: the host's resolver can change during a long build.
      resolvConf = sandboxResolvConf(await readFile(f, "utf8"));
      // Readable by every user, as the host's is: apt resolves as _apt (bwrap's data files are 0600).
      args.push("--perms", "0644", "--ro-bind-data", String(fds.resolv), f);
    } else if (f === HOSTS && extraHosts.length > 0) {
      hosts = await sandboxHosts(extraHosts);
      args.push("--perms", "0644", "--ro-bind-data", String(fds.hosts), f);
    } else args.push("--ro-bind", f, f);
  }
  for (const m of spec.extraMounts ?? []) {
    if (!isAbsolute(m.target)) throw new OcibuildError("SANDBOX_BAD_MOUNT", `mount target "${m.target}" is not absolute`);
    await requireTarget(m.target, m.type === "tmpfs" ? "a tmpfs" : m.source ?? "a bind mount");
    if (m.type === "tmpfs") args.push(...(m.size !== undefined ? ["--size", String(m.size)] : []), "--tmpfs", m.target);
    else {
      if (m.source === undefined) throw new OcibuildError("SANDBOX_BAD_MOUNT", `bind mount at "${m.target}" has no source`);
      args.push(m.readonly ? "--ro-bind" : "--bind", m.source, m.target);
    }
  }
  return { args, createdPaths: [...created].sort(), resolvConf, hosts };
}
