/**
 * The few filesystem calls Node has no API for: extended attributes, mknod
 * (device nodes, fifos, overlay whiteouts) and mount/umount. They are made
 * in-process through the C library (libc.ts, over koffi), loaded on the first
 * call that needs it. The xattr calls take microseconds and are made
 * synchronously: a batch over many paths runs in slices of a few milliseconds
 * with the event loop served between them, and an abort is seen between slices.
 * mount and umount run on a worker thread. Where the native module cannot be
 * loaded, mknod and mount fall back to the coreutils/util-linux commands and
 * xattrs fail with ROOTFS_XATTR_UNSUPPORTED. Paths handed here are already
 * resolved inside the root by the caller; nothing follows a final symlink.
 */
import { chmod, open, readdir } from "node:fs/promises";
import { constants as fsc } from "node:fs";
import { join } from "node:path";
import { constants as osc } from "node:os";
import { getSystemErrorName } from "node:util";
import { OcibuildError } from "../../errors.js";
import { monotonicMs } from "../../clock.js";
import { runProcess, type ProcessResult } from "../../process.js";
import { isRealRoot } from "../privilege.js";
import type { Libc } from "./libc.js";
import { FileReaders } from "./file-readers.js";
import { readXattrs, xattrBuffers } from "./xattr-list.js";

export type NodeKind = "char" | "block" | "fifo";

const ERANGE = osc.errno.ERANGE;

/** A failed system call: the C library's message, and the errno name ("EPERM"). */
export class NativeCallError extends Error {
  constructor(
    message: string,
    readonly errno: string,
  ) {
    super(message);
  }
}

/**
 * The C library bindings, loaded on first use (the module system keeps them). A
 * native module that cannot be loaded (no prebuilt binary for this platform, a
 * broken install) is ROOTFS_NATIVE_UNAVAILABLE, for the callers' fallbacks.
 */
async function native(): Promise<Libc> {
  let loaded: Libc | undefined;
  try {
    loaded = (await import("./libc.js")).libc;
  } catch (e) {
    throw unavailable(e);
  }
  // The CLI bundle initialises a module once: after a failed first load its exports stay unset.
  if (loaded === undefined) throw unavailable(new Error("the native module failed to load earlier in this process"));
  return loaded;
}

function unavailable(cause: unknown): OcibuildError {
  return new OcibuildError("ROOTFS_NATIVE_UNAVAILABLE", `the native filesystem calls (koffi) could not be loaded: ${(cause as Error).message}`, {
    cause,
    hint: "reinstall ocibuild with its dependencies (npm installs koffi's prebuilt binary for linux x64 and arm64)",
  });
}

function callError(c: Libc, what: string, r: number): NativeCallError {
  return new NativeCallError(`${what}: ${c.strerror(-r)}`, getSystemErrorName(r));
}

function aborted(signal: AbortSignal): OcibuildError {
  return new OcibuildError("ROOTFS_ABORTED", "the filesystem call was aborted", { cause: signal.reason });
}

/** Run `each` over `items`, yielding to the event loop every few milliseconds and checking `signal` then. */
async function sliced<T>(items: readonly T[], signal: AbortSignal | undefined, each: (item: T, index: number) => void): Promise<void> {
  const budgetMs = 4;
  let i = 0;
  while (i < items.length) {
    if (signal?.aborted) throw aborted(signal);
    const start = monotonicMs();
    do {
      each(items[i]!, i);
      i++;
    } while (i < items.length && (i % 64 !== 0 || monotonicMs() - start < budgetMs));
    if (i < items.length) await new Promise((r) => setImmediate(r));
  }
}

function isUnavailable(e: unknown): boolean {
  return e instanceof OcibuildError && e.code === "ROOTFS_NATIVE_UNAVAILABLE";
}

const S_IF: Record<NodeKind, number> = { char: 0o020000, block: 0o060000, fifo: 0o010000 };

/** mknod(2) with exactly `mode` (no umask). Throws OcibuildError ROOTFS_MKNOD_FAILED with the system's message. */
export async function mknod(hostPath: string, kind: NodeKind, mode: number, major = 0, minor = 0, signal?: AbortSignal): Promise<void> {
  const details = { path: hostPath, kind, major, minor };
  if (signal?.aborted) throw aborted(signal);
  const c = await native().catch((e: unknown) => (isUnavailable(e) ? undefined : Promise.reject(e)));
  if (c?.mknod !== undefined) {
    const r = c.mknod(hostPath, S_IF[kind] | (mode & 0o777), major, minor);
    if (r < 0) {
      throw new OcibuildError("ROOTFS_MKNOD_FAILED", `mknod ${hostPath} failed: ${c.strerror(-r)}`, { details: { ...details, errno: getSystemErrorName(r) } });
    }
    try {
      await chmod(hostPath, mode & 0o7777);
    } catch (e) {
      throw new OcibuildError("ROOTFS_MKNOD_FAILED", `chmod ${hostPath} failed: ${(e as Error).message}`, { cause: e, details });
    }
    return;
  }
  const args = ["-m", (mode & 0o7777).toString(8), "--", hostPath, kind === "char" ? "c" : kind === "block" ? "b" : "p"];
  if (kind !== "fifo") args.push(String(major), String(minor));
  let r: ProcessResult;
  try {
    // coreutils mknod, where the native module cannot be loaded.
    r = await runProcess("mknod", args, { signal });
  } catch (e) {
    if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "mknod was aborted", { cause: signal.reason });
    throw new OcibuildError("ROOTFS_MKNOD_FAILED", `cannot run mknod for ${hostPath}: ${(e as Error).message}`, { cause: e });
  }
  if (r.code !== 0) throw new OcibuildError("ROOTFS_MKNOD_FAILED", `mknod ${hostPath} failed: ${r.stderr.trim()}`, { details });
}

/**
 * mount(2) with no flags (paths in `data` as the caller gives them). Throws
 * NativeCallError when the kernel refuses, ROOTFS_NATIVE_UNAVAILABLE without the
 * native module. `signal` is checked before the call only: once made, it runs to
 * its end, and the caller checks the signal after it (and unmounts).
 */
export async function mountFs(source: string, target: string, fstype: string, data: string, signal?: AbortSignal): Promise<void> {
  const c = await native();
  if (signal?.aborted) throw aborted(signal);
  const r = await c.mount(source, target, fstype, data);
  if (r < 0) throw callError(c, "mount", r);
}

/** umount2(2); `flags` 2 is MNT_DETACH. Throws as mountFs does. `quick`: made on this thread (see there). */
export async function umount(target: string, flags = 0, opts: { quick?: boolean } = {}): Promise<void> {
  const c = await native();
  // `quick` (a mount that syncs nothing on its way out): a worker thread's round trip,
  // queued behind a layer's gzip on the thread pool, took 1-6 ms; the call itself ~0.6 ms.
  const r = opts.quick ? c.umount2Now(target, flags) : await c.umount2(target, flags);
  if (r < 0) throw callError(c, "umount", r);
}

/** FS_TOPDIR_FL (chattr's `T`). */
const TOPDIR_FL = 0x00020000;

/**
 * Mark `dir` as the top of unrelated directory trees (chattr +T): ext4's inode
 * allocator (Orlov) then spreads each new subdirectory to a block group of its own
 * instead of packing it beside its siblings. For the directories under which layers
 * are extracted and steps write their trees. It matters most on ext4 without a
 * journal, whose allocator skips every inode freed in the last minutes, one
 * buffer lookup each, from the start of the group on every file it creates: next
 * to a tree just removed (the last build's scratch), creating a base image's
 * files then cost ~10x what it does in a group of its own. Best effort: a
 * filesystem without the flag (tmpfs, btrfs, xfs) or without the native module
 * leaves the directory as it is; false then.
 */
export async function markTopDir(dir: string): Promise<boolean> {
  const c = await native().catch(() => undefined);
  if (c === undefined) return false;
  const fh = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW).catch(() => undefined);
  if (fh === undefined) return false;
  try {
    const flags = Buffer.alloc(8);
    if (c.getFlags(fh.fd, flags) < 0) return false;
    if ((flags.readInt32LE(0) & TOPDIR_FL) !== 0) return true;
    flags.writeInt32LE(flags.readInt32LE(0) | TOPDIR_FL);
    return c.setFlags(fh.fd, flags) >= 0;
  } finally {
    await fh.close();
  }
}

export interface XattrOp {
  path: string;
  name: string;
  value: Buffer;
}

async function xattrNative(what: string): Promise<Libc> {
  try {
    return await native();
  } catch (e) {
    if (!isUnavailable(e)) throw e;
    throw new OcibuildError("ROOTFS_XATTR_UNSUPPORTED", `${what} needs the native filesystem calls: ${(e as Error).message}`, {
      cause: e,
      hint: (e as OcibuildError).hint,
    });
  }
}

/**
 * Set extended attributes (never following a final symlink). Failures of single
 * attributes are returned as messages (the caller warns); a missing native module throws.
 */
export async function setXattrs(ops: XattrOp[], signal?: AbortSignal): Promise<string[]> {
  if (ops.length === 0) return [];
  const c = await xattrNative("setting extended attributes");
  const failed: string[] = [];
  await sliced(ops, signal, (o) => {
    const r = c.lsetxattr(o.path, o.name, o.value);
    if (r < 0) failed.push(`cannot set xattr ${o.name} on ${o.path}: ${c.strerror(-r)}`);
  });
  return failed;
}

/** Namespaces never reported: overlayfs' own attributes and SELinux labels (the host's, not the image's). */
const SKIP = ["trusted.overlay.", "user.overlay.", "security.selinux"];

/**
 * Worker threads that read files' stat fields, xattrs (without SKIP's) and content
 * (file-readers.ts), or undefined where they would not help (one core) or the native
 * module cannot be loaded (the caller's getXattrs then says so).
 */
export async function startFileReaders(): Promise<FileReaders | undefined> {
  const c = await native().catch(() => undefined);
  return c === undefined ? undefined : FileReaders.start(c.koffiPath, SKIP);
}

/**
 * Extended attributes of `paths` (never following a final symlink), without
 * overlayfs' own and SELinux labels. Paths with none, or unreadable, are absent from the result.
 */
export async function getXattrs(paths: string[], signal?: AbortSignal): Promise<Map<string, Record<string, Buffer>>> {
  const out = new Map<string, Record<string, Buffer>>();
  if (paths.length === 0) return out;
  const c = await xattrNative("reading extended attributes");
  const bufs = xattrBuffers();
  await sliced(paths, signal, (p) => {
    let found: Record<string, Buffer> | undefined;
    const keep = (name: string, value: Buffer) => void ((found ??= {})[name] = Buffer.from(value));
    readXattrs((b) => c.llistxattr(p, b), (nameZ, b) => c.lgetxattr(p, nameZ, b), SKIP, ERANGE, bufs, keep);
    if (found !== undefined) out.set(p, found);
  });
  return out;
}

const OPAQUE = ["trusted.overlay.opaque", "user.overlay.opaque"].map((n) => Buffer.from(`${n}\0`));

function isOpaque(c: Libc, path: string, value: Buffer): boolean {
  return OPAQUE.some((name) => c.lgetxattr(path, name, value) === 1 && value[0] === 0x79 /* "y" */);
}

/** For each directory in `paths`, whether it is marked overlay-opaque (either namespace). */
export async function areOpaque(paths: string[], signal?: AbortSignal): Promise<boolean[]> {
  if (paths.length === 0) return [];
  const c = await xattrNative("reading overlay attributes");
  const value = Buffer.allocUnsafe(16);
  const out = new Array<boolean>(paths.length);
  await sliced(paths, signal, (p, i) => (out[i] = isOpaque(c, p, value)));
  return out;
}

/** Root-relative paths ("" for the root itself) of directories marked overlay-opaque under `dir` (symlinks not followed). */
export async function findOpaqueDirs(dir: string, signal?: AbortSignal): Promise<Set<string>> {
  const c = await xattrNative(`reading overlay attributes under ${dir}`);
  const value = Buffer.allocUnsafe(16);
  const found = new Set<string>();
  const walk = async (rel: string): Promise<void> => {
    if (signal?.aborted) throw aborted(signal);
    const path = rel === "" ? dir : join(dir, rel);
    if (isOpaque(c, path, value)) found.add(rel);
    const entries = await readdir(path, { withFileTypes: true }).catch(() => []);
    for (const e of entries) if (e.isDirectory()) await walk(rel === "" ? e.name : `${rel}/${e.name}`);
  };
  await walk("");
  return found;
}

/** The overlay xattr that marks a directory opaque, for the mounter's privilege. */
export function opaqueXattrName(): string {
  // Root of a user namespace mounts with `userxattr` and cannot set trusted.* at all.
  return isRealRoot() ? "trusted.overlay.opaque" : "user.overlay.opaque";
}
