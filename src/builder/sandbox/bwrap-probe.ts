/**
 * Whether bubblewrap can make RUN's sandbox here, and how: tried once per executor.
 * A container whose /proc is masked (Docker's and Kubernetes' default) lets bwrap make
 * namespaces but not mount a new /proc: RUN then goes without a PID namespace, on the
 * container's own /proc, as BuildKit's --oci-worker-no-process-sandbox does; a plain
 * user who cannot open /dev/net/tun gets no network namespace of its own. Each is said
 * once, with its fix, as the availability's note.
 */
import { closeSync, openSync } from "node:fs";
import { runProcess } from "../../process.js";
import { privilege } from "../privilege.js";
import type { Availability } from "./index.js";

/** bwrap's availability, and whether RUN gets a PID namespace and a fresh /proc. */
export interface BwrapAvailability extends Availability {
  processSandbox?: boolean;
  /** RUN's default network (its own namespace through slirp4netns) can be made. */
  userNetwork?: boolean;
}

/**
 * Why slirp4netns could not open /dev/net/tun, or undefined when it can. Only a
 * question in rootless mode: real root opens it whatever its mode, and a plain user
 * cannot where it is 0600 (Debian's udev makes it 0666, some VMs and containers not).
 */
function tunProblem(): string | undefined {
  if (!privilege().userNamespace) return undefined;
  try {
    closeSync(openSync("/dev/net/tun", "r+"));
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
}

export async function probeBwrap(bwrapPath: string | undefined): Promise<BwrapAvailability> {
  if (bwrapPath === undefined) return { ok: false, reason: "bwrap (bubblewrap) is not installed (Debian: apt-get install bubblewrap)" };
  const probe = async (args: string[]) => runProcess(bwrapPath, ["--ro-bind", "/", "/", "--unshare-ipc", "--unshare-uts", ...args, "--dev", "/dev", "--", "true"]);
  try {
    const full = await probe(["--unshare-pid", "--proc", "/proc"]);
    const shared = full.code === 0 ? full : await probe(["--bind", "/proc", "/proc"]);
    if (shared.code !== 0) return { ok: false, reason: `bwrap cannot create a sandbox here (${full.stderr.trim() || `exit ${full.code}`})` };
    const notes: string[] = [];
    if (full.code !== 0) {
      notes.push(
        `RUN steps run without a PID namespace of their own, on this container's /proc (a new /proc cannot be mounted here: ${full.stderr.trim() || `exit ${full.code}`}); ` +
          "unmask /proc (Docker: --security-opt systempaths=unconfined, podman: --security-opt unmask=ALL, Kubernetes: procMount: Unmasked) to isolate them",
      );
    }
    const tun = tunProblem();
    if (tun !== undefined) {
      notes.push(
        `RUN steps share the host's network as this user sees it (no network namespace of their own: slirp4netns cannot open /dev/net/tun, ${tun}); ` +
          "make /dev/net/tun readable and writable by all (mode 0666, as Debian's udev does) to isolate them, or give steps --network=none",
      );
    }
    return { ok: true, processSandbox: full.code === 0, userNetwork: tun === undefined, ...(notes.length > 0 ? { note: notes.join("; and ") } : {}) };
  } catch (e) {
    return { ok: false, reason: `bwrap cannot be run: ${(e as Error).message}` };
  }
}
