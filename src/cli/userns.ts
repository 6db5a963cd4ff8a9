/**
 * Rootless mode: a build started by a plain user runs again inside a new user and
 * mount namespace where that user is root, as podman, buildah and rootless
 * BuildKit do. With a subordinate id range for the user in /etc/subuid and
 * /etc/subgid, ids 1..N map onto it through newuidmap/newgidmap (Debian's
 * `uidmap`), so `apt-get install`, `useradd`, `chown` and `COPY --chown` behave
 * as under root and the layers record ids as seen inside (root's files 0:0).
 * Without a range only the user itself is mapped (to 0) and a chown to another id
 * fails: the build says so once, with the fix.
 *
 * The namespace must exist before Node starts its threads (unshare(2) refuses a
 * multi-threaded process), so the CLI starts itself again under util-linux's
 * `unshare`, held at a shell's `read` until the maps are written from outside.
 */
import { childProcess } from "../builtins.js";
import { readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { constants as osConstants, userInfo } from "node:os";
import { NAMESPACE_HINT } from "../builder/sandbox/index.js";
import { OcibuildError } from "../errors.js";
import { which } from "../which.js";

/**
 * Set in the environment of the CLI started inside the namespace ("range" or
 * "single"), with OCIBUILD_HOST_UID, the building user's uid outside it.
 */
export const USERNS_ENV = "OCIBUILD_USERNS";

export interface SubIdRange {
  start: number;
  count: number;
}

/** The first range of /etc/subuid or /etc/subgid text naming the user (by name or id). */
export function subordinateRange(text: string, user: string, id: number): SubIdRange | undefined {
  for (const line of text.split("\n")) {
    const [who, start, count] = line.trim().split(":");
    if (who === undefined || start === undefined || count === undefined) continue;
    if (who !== user && who !== String(id)) continue;
    const s = Number(start);
    const c = Number(count);
    if (Number.isSafeInteger(s) && Number.isSafeInteger(c) && s > 0 && c > 0) return { start: s, count: c };
  }
  return undefined;
}

function readRange(file: string, user: string, id: number): SubIdRange | undefined {
  try {
    return subordinateRange(readFileSync(file, "utf8"), user, id);
  } catch {
    return undefined;
  }
}

export interface UsernsPlan {
  unshare: string;
  uid: number;
  gid: number;
  /** Subordinate ranges mapped to 1..count inside, with the tools that write them. */
  ranges?: { uid: SubIdRange; gid: SubIdRange; newuidmap: string; newgidmap: string };
  /** Said once before the build when only the user itself can be mapped. */
  warning?: string;
}

/**
 * How to enter rootless mode here, or an error saying why it cannot be entered
 * and both ways out (--executor buildkit, or the settings that allow it).
 */
export function planUserNamespace(env: Record<string, string | undefined>): UsernsPlan {
  const uid = process.getuid!();
  const gid = process.getgid!();
  const unshare = which("unshare", env.PATH);
  if (unshare === undefined) {
    throw new OcibuildError("ROOTLESS_UNAVAILABLE", "rootless mode needs util-linux's unshare, which is not installed", {
      hint: "install util-linux, or use --executor buildkit with a BuildKit daemon",
    });
  }
  const probe = childProcess().spawnSync(unshare, ["--user", "--mount", "--", "true"], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
  if (probe.status !== 0) {
    const why = (probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().replace(/^unshare: /, "");
    throw new OcibuildError("ROOTLESS_UNAVAILABLE", `cannot create a user namespace here (${why}), so this user cannot build with the bwrap executor`, {
      hint: NAMESPACE_HINT,
    });
  }
  let name = String(uid);
  try {
    name = userInfo().username;
  } catch {
    // A uid without a passwd entry (common in CI pods): /etc/subuid may still name it by number.
  }
  const subuid = readRange(env.OCIBUILD_SUBUID_FILE ?? "/etc/subuid", name, uid);
  const subgid = readRange(env.OCIBUILD_SUBGID_FILE ?? "/etc/subgid", name, uid);
  const newuidmap = which("newuidmap", env.PATH);
  const newgidmap = which("newgidmap", env.PATH);
  if (subuid && subgid && newuidmap && newgidmap) {
    return { unshare, uid, gid, ranges: { uid: subuid, gid: subgid, newuidmap, newgidmap } };
  }
  const fix =
    subuid && subgid
      ? "install newuidmap and newgidmap (Debian and Ubuntu: apt-get install uidmap)"
      : `give ${name} a range (as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${name})` +
        (newuidmap && newgidmap ? "" : " and install newuidmap/newgidmap (apt-get install uidmap)");
  return {
    unshare,
    uid,
    gid,
    warning: `rootless mode maps only your own uid (to root): a RUN chown, useradd or COPY --chown to another id will fail; to map more ids, ${fix}`,
  };
}

function writeMaps(plan: UsernsPlan, pid: number): void {
  const r = plan.ranges;
  if (r !== undefined) {
    for (const [tool, own, range] of [[r.newuidmap, plan.uid, r.uid], [r.newgidmap, plan.gid, r.gid]] as const) {
      const res = childProcess().spawnSync(tool, [String(pid), "0", String(own), "1", "1", String(range.start), String(range.count)], { encoding: "utf8" });
      if (res.status !== 0) {
        throw new OcibuildError("ROOTLESS_MAP_FAILED", `${tool} could not map the subordinate ids: ${(res.stderr || res.error?.message || "").trim()}`, {
          hint:
            "check /etc/subuid and /etc/subgid, and that newuidmap/newgidmap are setuid root or have file capabilities; " +
            "in a container they need file capabilities (setcap cap_setuid+ep newuidmap, cap_setgid+ep newgidmap), not the setuid bit",
        });
      }
    }
    return;
  }
  try {
    writeFileSync(`/proc/${pid}/uid_map`, `0 ${plan.uid} 1\n`);
    writeFileSync(`/proc/${pid}/setgroups`, "deny\n");
    writeFileSync(`/proc/${pid}/gid_map`, `0 ${plan.gid} 1\n`);
  } catch (e) {
    throw new OcibuildError("ROOTLESS_MAP_FAILED", `cannot map this user into its namespace: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Run `command` (argv, the program first) inside a new user and mount namespace
 * and return its exit status. Signals that stop the build (SIGTERM,
 * SIGHUP; a terminal's SIGINT reaches it directly) are passed on.
 */
export async function runInUserNamespace(plan: UsernsPlan, command: string[], env: Record<string, string | undefined>, signal: AbortSignal): Promise<number> {
  // The shell waits on fd 3 until the maps are written, then becomes the CLI as root.
  const hold = 'read -r _ <&3; exec 3<&-; exec "$@"';
  const child = childProcess().spawn(plan.unshare, ["--user", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", hold, "sh", ...command], {
    stdio: ["inherit", "inherit", "inherit", "pipe"],
    env: { ...env, [USERNS_ENV]: plan.ranges ? "range" : "single", OCIBUILD_HOST_UID: String(plan.uid) },
  });
  const exited = new Promise<number>((resolve, reject) => {
    child.once("error", (e) => reject(new OcibuildError("ROOTLESS_UNAVAILABLE", `cannot start ${plan.unshare}: ${e.message}`, { cause: e })));
    // A shell's convention for a command killed by a signal: 128 + its number.
    child.once("close", (code, sig) => resolve(code ?? 128 + (sig ? (osConstants.signals[sig] ?? 15) : 15)));
  });
  const gate = child.stdio[3] as NodeJS.WritableStream;
  const onAbort = () => child.kill("SIGTERM");
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    try {
      // unshare has made the namespaces once the shell runs in them; the maps go on that pid.
      await new Promise<void>((resolve) => (child.pid !== undefined ? resolve() : child.once("spawn", () => resolve())));
      await waitForNamespace(child.pid!, signal);
      writeMaps(plan, child.pid!);
    } catch (e) {
      child.kill("SIGKILL");
      await exited.catch(() => 0);
      throw e;
    }
    gate.end("go\n");
    return await exited;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** unshare(2) happens after the spawn: wait until the child's user namespace differs from ours. */
async function waitForNamespace(pid: number, signal: AbortSignal): Promise<void> {
  const ours = readlinkSafe("/proc/self/ns/user");
  for (let i = 0; i < 2000; i++) {
    signal.throwIfAborted();
    const theirs = readlinkSafe(`/proc/${pid}/ns/user`);
    if (theirs === undefined) break;
    if (theirs !== ours) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new OcibuildError("ROOTLESS_UNAVAILABLE", "the process started under unshare did not enter a new user namespace");
}

function readlinkSafe(p: string): string | undefined {
  try {
    return readlinkSync(p);
  } catch {
    return undefined;
  }
}
