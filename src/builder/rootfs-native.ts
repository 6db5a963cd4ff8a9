/**
 * The few filesystem calls Node has no API for: mknod (device nodes, fifos,
 * overlay whiteouts) and extended attributes. All go through the one long-lived
 * helper process (native-helper.ts), batched where the caller has many paths;
 * mknod falls back to coreutils' `mknod` where the helper cannot run. Paths handed
 * here are already resolved inside the root by the caller; nothing follows a
 * final symlink.
 */
import { spawn } from "node:child_process";
import { OcibuildError } from "../errors.js";
import { isRealRoot } from "./privilege.js";
import { NativeCallError, nativeHelper } from "./native-helper.js";

export type NodeKind = "char" | "block" | "fifo";

function isUnavailable(e: unknown): boolean {
  return e instanceof OcibuildError && e.code === "ROOTFS_HELPER_UNAVAILABLE";
}

/** coreutils mknod, for machines without python3. */
function mknodTool(args: string[], signal?: AbortSignal): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("mknod", args, { stdio: ["ignore", "ignore", "pipe"], signal });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

/** mknod(2) with exactly `mode` (no umask). Throws OcibuildError ROOTFS_MKNOD_FAILED with the system's message. */
export async function mknod(hostPath: string, kind: NodeKind, mode: number, major = 0, minor = 0, signal?: AbortSignal): Promise<void> {
  const details = { path: hostPath, kind, major, minor };
  try {
    await nativeHelper().call("mknod", { path: hostPath, kind, mode: mode & 0o7777, major, minor }, signal);
    return;
  } catch (e) {
    if (e instanceof NativeCallError) {
      throw new OcibuildError("ROOTFS_MKNOD_FAILED", `mknod ${hostPath} failed: ${e.message}`, { details: { ...details, errno: e.errno } });
    }
    if (!isUnavailable(e)) throw e;
  }
  const args = ["-m", (mode & 0o7777).toString(8), "--", hostPath, kind === "char" ? "c" : kind === "block" ? "b" : "p"];
  if (kind !== "fifo") args.push(String(major), String(minor));
  let r: { code: number | null; stderr: string };
  try {
    r = await mknodTool(args, signal);
  } catch (e) {
    if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "mknod was aborted", { cause: signal.reason });
    throw new OcibuildError("ROOTFS_MKNOD_FAILED", `cannot run mknod for ${hostPath}: ${(e as Error).message}`, { cause: e });
  }
  if (r.code !== 0) throw new OcibuildError("ROOTFS_MKNOD_FAILED", `mknod ${hostPath} failed: ${r.stderr.trim()}`, { details });
}

export interface XattrOp {
  path: string;
  name: string;
  value: Buffer;
}

function helperFailed(what: string, e: unknown): unknown {
  if (e instanceof NativeCallError) return new OcibuildError("ROOTFS_XATTR_FAILED", `${what} failed: ${e.message}`, { cause: e });
  if (isUnavailable(e)) {
    const u = e as OcibuildError;
    return new OcibuildError("ROOTFS_XATTR_UNSUPPORTED", `extended attributes need python3, which could not be run: ${u.message}`, {
      cause: e,
      hint: "install python3 (Debian: apt-get install python3-minimal)",
    });
  }
  return e;
}

/**
 * Set extended attributes (never following a final symlink). Failures of single
 * attributes are returned as messages (the caller warns); a missing helper throws.
 */
export async function setXattrs(ops: XattrOp[], signal?: AbortSignal): Promise<string[]> {
  if (ops.length === 0) return [];
  let failed: { p: string; n: string; e: string }[];
  try {
    failed = await nativeHelper().call("set", { ops: ops.map((o) => ({ p: o.path, n: o.name, v: o.value.toString("base64") })) }, signal);
  } catch (e) {
    throw helperFailed("setting extended attributes", e);
  }
  return failed.map((f) => `cannot set xattr ${f.n} on ${f.p}: ${f.e}`);
}

/**
 * Extended attributes of `paths` (never following a final symlink), without
 * overlayfs' own and SELinux labels. Paths with none are absent from the result.
 */
export async function getXattrs(paths: string[], signal?: AbortSignal): Promise<Map<string, Record<string, Buffer>>> {
  const out = new Map<string, Record<string, Buffer>>();
  if (paths.length === 0) return out;
  let found: Record<string, Record<string, string>>;
  try {
    found = await nativeHelper().call("get", { paths }, signal);
  } catch (e) {
    throw helperFailed("reading extended attributes", e);
  }
  for (const [p, xs] of Object.entries(found)) {
    const x: Record<string, Buffer> = {};
    for (const [k, v] of Object.entries(xs)) x[k] = Buffer.from(v, "base64");
    out.set(p, x);
  }
  return out;
}

/** For each directory in `paths`, whether it is marked overlay-opaque (either namespace). One round trip. */
export async function areOpaque(paths: string[], signal?: AbortSignal): Promise<boolean[]> {
  if (paths.length === 0) return [];
  try {
    return await nativeHelper().call<boolean[]>("opaque", { paths }, signal);
  } catch (e) {
    throw helperFailed("reading overlay attributes", e);
  }
}

/** Root-relative paths ("" for the root itself) of directories marked overlay-opaque under `dir`. */
export async function findOpaqueDirs(dir: string, signal?: AbortSignal): Promise<Set<string>> {
  let found: string[];
  try {
    found = await nativeHelper().call<string[]>("opaque-walk", { root: dir }, signal);
  } catch (e) {
    throw helperFailed(`reading overlay attributes under ${dir}`, e);
  }
  return new Set(found.map((rel) => (rel === "." ? "" : rel)));
}

/** The overlay xattr that marks a directory opaque, for the mounter's privilege. */
export function opaqueXattrName(): string {
  // Root of a user namespace mounts with `userxattr` and cannot set trusted.* at all.
  return isRealRoot() ? "trusted.overlay.opaque" : "user.overlay.opaque";
}
