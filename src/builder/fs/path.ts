/**
 * Path resolution inside a root directory that may contain hostile symlinks.
 * Every component is looked up with lstat; a symlink met on the way is resolved
 * as the process inside the root would see it (absolute targets start at the
 * root) and must stay inside it; a target that climbs above the root with `..`
 * is refused. Nothing here ever follows a link with the host's view of "/".
 */
import { chmod, lstat, mkdir, readlink } from "node:fs/promises";
import { chmodSync, mkdirSync, readlinkSync, type Stats } from "node:fs";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";

/** OCI whiteout names: `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq` makes its directory opaque. */
export const WH_PREFIX = ".wh.";
export const WH_OPAQUE = ".wh..wh..opq";
import { lstatOrNull, lstatOrNullSync } from "./util.js";

const MAX_LINKS = 40;

/**
 * Split a tar entry name or an archive-internal path into components.
 * "./a/b/" -> ["a","b"]; "." -> []. Absolute paths and `..` components are refused.
 */
export function splitEntryPath(name: string, what = "entry"): string[] {
  if (name.includes("\0")) throw unsafe(`${what} "${name.replace(/\0/g, "\\0")}" contains a NUL byte`, name);
  if (name.startsWith("/")) throw unsafe(`${what} "${name}" is an absolute path`, name);
  const out: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") throw unsafe(`${what} "${name}" contains a ".." component`, name);
    out.push(c);
  }
  return out;
}

export function unsafe(message: string, path?: string): OcibuildError {
  return new OcibuildError("ROOTFS_UNSAFE_PATH", `refusing unsafe path: ${message}`, {
    details: path === undefined ? undefined : { path },
    hint: "the layer or path tries to reach outside the root filesystem; it may be corrupt or hostile",
  });
}


export interface ResolvedDir {
  /** Absolute host path of a real directory inside root. */
  hostPath: string;
  /** Its root-relative components after resolving symlinks. */
  comps: string[];
}

/** A filesystem call the resolver needs: made by the async or the sync driver below. */
type FsCall = { op: "lstat"; path: string } | { op: "mkdir"; path: string } | { op: "readlink"; path: string };
type FsAnswer = Stats | null | string | undefined;

/**
 * The resolution itself, once for both drivers: walks `comps` component by component,
 * asking for each lstat, mkdir or readlink it needs. `known` holds root-relative paths
 * already seen to be real directories (skipped); each plain directory found or made is added.
 */
function* resolveSteps(root: string, comps: readonly string[], known: Set<string>, create: boolean): Generator<FsCall, ResolvedDir | null, FsAnswer> {
  const whole = comps.join("/");
  const queue = [...comps];
  const cur: string[] = [];
  let links = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === "" || c === ".") continue;
    if (c === "..") {
      // Only reachable through a symlink target: climbing above the root is an escape.
      if (cur.length === 0) throw unsafe(`a symlink under "${whole}" points above the root`, whole);
      cur.pop();
      continue;
    }
    cur.push(c);
    const rel = cur.join("/");
    if (known.has(rel)) continue;
    const host = join(root, rel);
    const st = (yield { op: "lstat", path: host }) as Stats | null;
    if (st === null) {
      if (!create) return null;
      yield { op: "mkdir", path: host };
    } else if (st.isSymbolicLink()) {
      cur.pop();
      if (++links > MAX_LINKS) {
        throw new OcibuildError("ROOTFS_SYMLINK_LOOP", `too many levels of symbolic links resolving "${whole}"`, { details: { path: whole } });
      }
      const target = (yield { op: "readlink", path: host }) as string;
      if (target.startsWith("/")) cur.length = 0;
      queue.unshift(...target.split("/"));
      continue;
    } else if (!st.isDirectory()) {
      throw new OcibuildError("ROOTFS_NOT_A_DIRECTORY", `"${rel}" is not a directory (resolving "${whole}")`, { details: { path: whole } });
    }
    known.add(rel);
  }
  return { hostPath: cur.length === 0 ? root : join(root, ...cur), comps: cur };
}

/**
 * Resolve `comps` (root-relative, already validated) to a real directory inside
 * `root`, following symlinks as the root sees them. With `create`, missing
 * directories are made (mode 0755, whatever the umask; `onCreate` is called for each).
 * Returns null when a component is missing and `create` is false.
 */
export async function resolveDirInRoot(
  root: string,
  comps: readonly string[],
  opts: { create?: boolean; onCreate?: (hostPath: string) => Promise<void> } = {},
): Promise<ResolvedDir | null> {
  const steps = resolveSteps(root, comps, new Set(), opts.create ?? false);
  for (let r = steps.next(); ; ) {
    if (r.done) return r.value;
    const call = r.value;
    if (call.op === "lstat") r = steps.next(await lstatOrNull(call.path));
    else if (call.op === "readlink") r = steps.next(await readlink(call.path));
    else {
      await mkdir(call.path, { mode: 0o755 });
      await chmod(call.path, 0o755);
      if (opts.onCreate) await opts.onCreate(call.path);
      r = steps.next(undefined);
    }
  }
}

/**
 * resolveDirInRoot for one extraction's hot loop: synchronous (no thread-pool round
 * trip per component) and backed by `known`, the root-relative paths (resolved,
 * "/"-joined) this caller has already seen to be real directories reached through
 * real directories. A known component costs nothing; every other one is checked
 * exactly as resolveDirInRoot does, and added to `known` once it is a plain
 * directory (found or made). The caller must clear `known` whenever it removes or
 * replaces anything under the root, so a stale entry can never skip a check.
 */
export function resolveDirInRootSync(
  root: string,
  comps: readonly string[],
  known: Set<string>,
  opts: { create?: boolean } = {},
): ResolvedDir | null {
  const whole = comps.join("/");
  if (whole === "" || known.has(whole)) return { hostPath: whole === "" ? root : join(root, whole), comps: [...comps] };
  const steps = resolveSteps(root, comps, known, opts.create ?? false);
  for (let r = steps.next(); ; ) {
    if (r.done) return r.value;
    const call = r.value;
    if (call.op === "lstat") r = steps.next(lstatOrNullSync(call.path));
    else if (call.op === "readlink") r = steps.next(readlinkSync(call.path));
    else {
      mkdirSync(call.path, { mode: 0o755 });
      chmodSync(call.path, 0o755); // whatever the process umask
      r = steps.next(undefined);
    }
  }
}

/**
 * Resolve a root-relative path for lookup: parents are resolved inside the root,
 * the last component is not followed (lstat semantics). Null when missing.
 */
export async function resolveNoFollow(root: string, comps: readonly string[]): Promise<{ hostPath: string; stats: Stats } | null> {
  if (comps.length === 0) return { hostPath: root, stats: await lstat(root) };
  let parent: ResolvedDir | null;
  try {
    parent = await resolveDirInRoot(root, comps.slice(0, -1));
  } catch (e) {
    if (e instanceof OcibuildError && e.code === "ROOTFS_NOT_A_DIRECTORY") return null;
    throw e;
  }
  if (parent === null) return null;
  const hostPath = join(parent.hostPath, comps[comps.length - 1]!);
  const stats = await lstatOrNull(hostPath);
  return stats === null ? null : { hostPath, stats };
}

/** Resolve a root-relative path following every symlink (inside the root). Null when missing. */
export async function resolveFollow(root: string, comps: readonly string[]): Promise<{ hostPath: string; stats: Stats } | null> {
  let links = 0;
  let cur: readonly string[] = comps;
  for (;;) {
    const r = await resolveNoFollow(root, cur);
    if (r === null || !r.stats.isSymbolicLink()) return r;
    if (++links > MAX_LINKS) {
      throw new OcibuildError("ROOTFS_SYMLINK_LOOP", `too many levels of symbolic links resolving "${comps.join("/")}"`);
    }
    const target = await readlink(r.hostPath);
    const base = target.startsWith("/") ? [] : cur.slice(0, -1);
    // Normalise lexically; ".." above the root is an escape.
    const next = [...base];
    for (const c of target.split("/")) {
      if (c === "" || c === ".") continue;
      if (c === "..") {
        if (next.length === 0) throw unsafe(`symlink "${cur.join("/")}" points above the root`, cur.join("/"));
        next.pop();
      } else next.push(c);
    }
    cur = next;
  }
}
