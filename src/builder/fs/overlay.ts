/**
 * A stage's writable root: overlayfs over read-only layer directories with a
 * fresh upperdir, or, where overlayfs cannot be mounted, a materialised copy
 * of the merged tree ("copy" mode; snapshot.ts then diffs it against the lower
 * view, giving the same layer).
 */
import { closeSync, constants as fsc, mkdirSync, openSync, readdirSync, rmdirSync, rmSync, symlinkSync, unlinkSync } from "node:fs";
import { chmod, copyFile, lchown, link, lutimes, mkdir, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { runProcess } from "../../process.js";
import { which } from "../../which.js";
import { isRealRoot } from "../privilege.js";
import { splitDev } from "../../oci/tar-entries.js";
import { LowerView, type LowerEntry } from "./lowerview.js";
import { lstatOrNullSync } from "./util.js";
import { getXattrs, mknod, mountFs, NativeCallError, setXattrs, umount, type XattrOp } from "./native.js";

const MNT_DETACH = 2;
/** Lower layers one overlay mount takes: "/proc/self/fd/NNNN/l/NNN:" each, all in a 4 KiB page with the other options. */
const MAX_LOWER_DIRS = 150;

export interface MountedRoot {
  /** The merged tree to run in and to read from. */
  merged: string;
  /**
   * Overlay mode: the upperdir (this step's change in overlay form; reusable as a
   * lowerdir of the next step once unmounted). Copy mode: equals `merged` (the
   * whole tree; NOT usable as a lowerdir: store the snapshot's layer instead).
   */
  upper: string;
  /** Overlay workdir ("" in copy mode). */
  work: string;
  /**
   * "overlay": the kernel's overlayfs; "fuse-overlayfs": the same in user space, where
   * the kernel's cannot be mounted (older kernels in a user namespace); "copy": a copy.
   */
  mode: "overlay" | "fuse-overlayfs" | "copy";
  /**
   * The kernel's overlay mounted with whole-file copy-up and no redirects
   * (metacopy=off, redirect_dir=off): a path the merged tree shows from the upperdir
   * alone (nothing of the lower view there or below) is all in the upperdir, content
   * and extended attributes, so the snapshot reads it there, without overlayfs' own
   * open and xattr layer on top of the upper filesystem's.
   */
  plainUpper?: boolean;
  /**
   * Copy mode: the change time (ms) of a marker written right after the copy was
   * made. A file whose ctime is older was not written since, so equal metadata
   * means equal content; a younger one may have been rewritten keeping its size
   * and mtime (`cp -p`, `touch -r`, `tar x`) and is compared by content.
   */
  copiedAtMs?: number;
  /** Unmounts (overlay) and removes the workdir; leaves upper (and merged copy) in place. Idempotent. */
  /**
   * `small`: the caller knows the tree changed little (a step that wrote a few hundred
   * entries), so a `volatile` overlay is unmounted on the main thread (see
   * unmountOverlay); a step that wrote 100,000 files took 227 ms in umount2 alone.
   */
  unmount(opts?: { small?: boolean }): Promise<void>;
}

export interface MountOptions {
  signal?: AbortSignal;
  onLog?: (msg: string) => void;
  /** Skip overlayfs and materialise a copy. */
  forceCopy?: boolean;
  /** Skip the kernel's overlayfs and use fuse-overlayfs (tests: every mode gives the same layer). */
  forceFuse?: boolean;
  /**
   * Above this many lower layers, the bottom ones are flattened into one copied
   * directory first (each costs lookups, and ~24 bytes of the one-page mount
   * options). Default 128, at most MAX_LOWER_DIRS.
   */
  maxLowerDirs?: number;
}

/**
 * mount(2) of an overlay at `dir`/merged with the option string `data(prefix)`,
 * where `prefix` leads to `dir`. In-process the prefix is /proc/self/fd/N/ of an
 * open descriptor of `dir` (short however deep `dir` is, and no chdir); the mount
 * command, where the native calls cannot be loaded, runs in `dir` with an empty
 * prefix. Returns "" on success, otherwise the reason.
 */
async function mountOverlay(dir: string, data: (prefix: string) => string, signal?: AbortSignal): Promise<string> {
  signal?.throwIfAborted();
  const fd = openSync(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await mountFs("overlay", join(dir, "merged"), "overlay", data(`/proc/self/fd/${fd}/`), signal);
    // An abort that came while the kernel mounted: undo it here, nobody else knows of it.
    if (signal?.aborted) {
      await unmountOverlay(join(dir, "merged"));
      signal.throwIfAborted();
    }
    return "";
  } catch (e) {
    if (e instanceof NativeCallError) return e.message;
    if (signal?.aborted || !(e instanceof OcibuildError) || e.code !== "ROOTFS_NATIVE_UNAVAILABLE") throw e;
  } finally {
    closeSync(fd);
  }
  const r = await runProcess("mount", ["-t", "overlay", "overlay", "-o", data(""), "merged"], { cwd: dir, signal });
  return r.code === 0 ? "" : r.stderr.trim() || `mount exited with ${r.code}`;
}

/**
 * umount(2) (lazily, MNT_DETACH, when busy), in-process or through the umount command.
 * `quick`: an overlay mounted `volatile`, whose unmount syncs nothing, over a tree that
 * changed little, is unmounted on the main thread.
 */
async function unmountOverlay(target: string, quick = false): Promise<string> {
  try {
    await umount(target, 0, { quick });
    return "";
  } catch (e) {
    if (e instanceof NativeCallError) {
      try {
        await umount(target, MNT_DETACH);
        return "";
      } catch (e2) {
        return (e2 as Error).message;
      }
    }
  }
  const r = await runProcess("umount", [target]);
  if (r.code === 0) return "";
  const lazy = await runProcess("umount", ["-l", target]);
  return lazy.code === 0 ? "" : r.stderr.trim();
}

/**
 * Copy the merged view of `lowerDirs` (bottom first) into `dest` (an empty dir),
 * keeping modes, owners, mtimes, xattrs, symlinks, hardlinks (within the copy)
 * and device nodes; whiteouts are resolved away.
 */
export async function materialize(lowerDirs: string[], dest: string, opts: { signal?: AbortSignal; onWarning?: (msg: string) => void } = {}): Promise<void> {
  const view = await LowerView.open(lowerDirs, opts.signal);
  const isRoot = process.getuid?.() === 0;
  const links = new Map<string, string>();
  const dirMeta: { path: string; e: LowerEntry }[] = [];
  const copied: { from: string; to: string }[] = [];

  const meta = async (path: string, e: LowerEntry, isLink: boolean) => {
    if (isRoot) await lchown(path, e.stats.uid, e.stats.gid);
    if (!isLink) await chmod(path, e.stats.mode & 0o7777);
    await lutimes(path, e.stats.atimeMs / 1000, e.stats.mtimeMs / 1000);
  };

  const walk = async (comps: string[], destDir: string): Promise<void> => {
    const names = (await view.list(comps)) ?? [];
    names.sort();
    for (const name of names) {
      opts.signal?.throwIfAborted();
      const c = [...comps, name];
      const e = await view.lookup(c);
      if (e === null) continue;
      const out = join(destDir, name);
      const st = e.stats;
      if (st.isDirectory()) {
        await mkdir(out, { mode: 0o700 });
        await walk(c, out);
        dirMeta.push({ path: out, e });
        copied.push({ from: e.hostPath, to: out });
      } else if (st.isFile()) {
        const key = `${st.dev}:${st.ino}`;
        const prior = st.nlink > 1 ? links.get(key) : undefined;
        if (prior !== undefined) {
          await link(prior, out);
          continue;
        }
        await copyFile(e.hostPath, out, fsc.COPYFILE_FICLONE);
        await meta(out, e, false);
        copied.push({ from: e.hostPath, to: out });
        if (st.nlink > 1) links.set(key, out);
      } else if (st.isSymbolicLink()) {
        await symlink(await readlink(e.hostPath), out);
        await meta(out, e, true);
      } else if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO()) {
        const { devmajor: major, devminor: minor } = splitDev(BigInt(st.rdev));
        try {
          await mknod(out, st.isFIFO() ? "fifo" : st.isCharacterDevice() ? "char" : "block", st.mode, major, minor, opts.signal);
          await meta(out, e, false);
        } catch (err) {
          opts.onWarning?.(`skipped device node "${c.join("/")}": ${(err as Error).message}`);
        }
      }
    }
  };
  await walk([], dest);
  // Extended attributes (file capabilities...) in two batched calls.
  const found = await getXattrs(copied.map((c) => c.from), opts.signal);
  const ops: XattrOp[] = [];
  for (const c of copied) for (const [name, value] of Object.entries(found.get(c.from) ?? {})) ops.push({ path: c.to, name, value });
  for (const w of await setXattrs(ops, opts.signal)) opts.onWarning?.(w);
  for (const d of dirMeta) await meta(d.path, d.e, false);
  const top = await view.lookup([]);
  if (top !== null) await meta(dest, top, false);
}

/**
 * fuse-overlayfs over the `l/N` links of `scratchDir` (bottom first), with the same
 * upper and work directories as the kernel's overlay. Returns the mounted root, or
 * why it could not be mounted (not installed, no /dev/fuse, ...). Its upperdir keeps
 * fuse-overlayfs's own bookkeeping (opaque markers), so the snapshot compares whole
 * directories under what it touched and the upperdir is not kept as a layer directory.
 */
async function mountFuseOverlay(scratchDir: string, count: number, signal?: AbortSignal): Promise<MountedRoot | string> {
  const tool = which("fuse-overlayfs");
  if (tool === undefined) return "not installed";
  const lowers = Array.from({ length: count }, (_, i) => join(scratchDir, "l", String(count - 1 - i))).join(":");
  const merged = join(scratchDir, "merged");
  const r = await runProcess(tool, ["-o", `lowerdir=${lowers},upperdir=${join(scratchDir, "upper")},workdir=${join(scratchDir, "work")}`, merged], { cwd: scratchDir, signal });
  if (r.code !== 0) return r.stderr.trim().split("\n").at(-1) || `exit ${r.code}`;
  return mountedOverlay(scratchDir, "fuse-overlayfs");
}

/**
 * The kernel's overlayfs over the `l/N` links of `scratchDir`. Returns "" once
 * mounted, otherwise why not (the last option set's failure).
 */
async function mountKernelOverlay(scratchDir: string, count: number, signal?: AbortSignal): Promise<{ failure: string; plain: boolean; volatile: boolean }> {
  const lowerOpt = (p: string) => Array.from({ length: count }, (_, i) => `${p}l/${count - 1 - i}`).join(":");
  // Outside the initial user namespace overlayfs keeps its metadata in user.overlay.* xattrs.
  const basic = (p: string) => [`lowerdir=${lowerOpt(p)}`, `upperdir=${p}upper`, `workdir=${p}work`, ...(isRealRoot() ? [] : ["userxattr"])];
  // Plain copy-up semantics (whole files, no redirects, no index) keep the upperdir a
  // self-contained change; kernels that do not know an option get the plain mount.
  // `volatile` (Linux 5.10+): no syncs to the upper filesystem. Without it, every
  // unmount synced the whole filesystem under the cache dir (ovl_sync_fs): 200 ms
  // after a step on a freshly extracted base, all of it writing back the base's
  // files. A step's upper dir is thrown away or kept as a cache layer, never needed
  // to survive a crash more than any other file the build writes without fsync.
  const plain = (p: string) => [...basic(p), "index=off", "metacopy=off", "redirect_dir=off"];
  let failure = "";
  const volatile = (p: string) => [...plain(p), "volatile"];
  for (const o of [volatile, plain, basic]) {
    try {
      failure = await mountOverlay(scratchDir, (p) => o(p).join(","), signal);
    } catch (e) {
      if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "mounting the stage root was aborted", { cause: e });
      failure = (e as Error).message;
    }
    if (failure === "") return { failure, plain: o !== basic, volatile: o === volatile };
  }
  return { failure, plain: false, volatile: false };
}

/** The root mounted (by either overlay) at `scratchDir`/merged; unmount() also removes the workdir and the `l/N` links. */
function mountedOverlay(scratchDir: string, mode: "overlay" | "fuse-overlayfs", plainUpper = false, volatile = false): MountedRoot {
  const merged = join(scratchDir, "merged");
  const work = join(scratchDir, "work");
  let mounted = true;
  /** The unmount under way: a second call waits for it (a failed one is tried again). */
  let unmounting: Promise<void> | undefined;
  const unmount = async (small: boolean) => {
    const failed = await unmountOverlay(merged, volatile && small);
    if (failed !== "") throw new OcibuildError("ROOTFS_UNMOUNT_FAILED", `cannot unmount ${merged}: ${failed}`, { details: { path: merged } });
    mounted = false;
    removeOverlayDirs(work, join(scratchDir, "l"));
  };
  return {
    merged,
    upper: join(scratchDir, "upper"),
    work,
    mode,
    plainUpper,
    unmount(opts = {}) {
      if (!mounted) return Promise.resolve();
      unmounting ??= unmount(opts.small === true).finally(() => (unmounting = undefined));
      return unmounting;
    },
  };
}

/**
 * An unmounted overlay's work directory (the kernel's empty work/work in it) and its
 * links to the lower layers, with blocking calls, one per entry: with a layer's gzip on
 * the other core, a thread-pool round trip per call (async rm) made these 15-20 ms, and
 * Node's recursive rmSync 1.5-4.5 ms. Anything unexpected there goes with rmSync.
 */
function removeOverlayDirs(work: string, links: string): void {
  try {
    // A `volatile` mount leaves work/work/incompat/volatile/dirty.
    const volatile = join(work, "work", "incompat", "volatile");
    if (lstatOrNullSync(volatile) !== null) {
      unlinkSync(join(volatile, "dirty"));
      rmdirSync(volatile);
      rmdirSync(join(work, "work", "incompat"));
    }
    rmdirSync(join(work, "work"));
    rmdirSync(work);
  } catch {
    rmSync(work, { recursive: true, force: true });
  }
  try {
    for (const name of readdirSync(links)) unlinkSync(join(links, name));
    rmdirSync(links);
  } catch {
    rmSync(links, { recursive: true, force: true });
  }
}

/**
 * Above the limit of lower layers one mount takes (opts.maxLowerDirs, at most
 * MAX_LOWER_DIRS), the bottom ones copied into one directory, `scratchDir`/flat.
 */
async function flattenBottom(lowers: string[], scratchDir: string, opts: MountOptions, log: (msg: string) => void): Promise<string[]> {
  const max = Math.min(opts.maxLowerDirs ?? 128, MAX_LOWER_DIRS);
  if (lowers.length <= max) return lowers;
  const flat = join(scratchDir, "flat");
  const cut = lowers.length - max + 1;
  log(`flattening the bottom ${cut} of ${lowers.length} layers into one directory (overlay stacking limit)`);
  await rm(flat, { recursive: true, force: true });
  await mkdir(flat);
  await materialize(lowers.slice(0, cut), flat, { signal: opts.signal, onWarning: log });
  return [flat, ...lowers.slice(cut)];
}

/**
 * The upper and work directories, and the lower layers as links `l/0`, `l/1`...
 * (bottom first; an empty directory when there is none): short names behind a
 * /proc/self/fd prefix keep the mount options under the page-size limit however
 * deep scratchDir is. Returns how many links there are. Blocking calls, as the mount's
 * other preparations (mountRoot, mountOverlay, step-root.ts mutateRoot): a thread-pool
 * round trip each waited behind the previous step's gzip, 1-12 ms of a step's start.
 */
function prepareOverlayDirs(lowers: string[], scratchDir: string): number {
  mkdirSync(join(scratchDir, "upper"), { recursive: true });
  mkdirSync(join(scratchDir, "work"), { recursive: true });
  const l = join(scratchDir, "l");
  if (lstatOrNullSync(l)) rmSync(l, { recursive: true, force: true });
  mkdirSync(l);
  if (lowers.length === 0) {
    mkdirSync(join(scratchDir, "empty"), { recursive: true });
    lowers = [join(scratchDir, "empty")];
  }
  for (let i = 0; i < lowers.length; i++) symlinkSync(lowers[i]!, join(l, String(i)));
  return lowers.length;
}

/** Copy mode: the merged tree materialised at `scratchDir`/merged, its upper the same tree. */
async function copyRoot(lowerDirs: string[], scratchDir: string, signal: AbortSignal | undefined, log: (msg: string) => void): Promise<MountedRoot> {
  const merged = join(scratchDir, "merged");
  await materialize(lowerDirs, merged, { signal, onWarning: log });
  const marker = join(scratchDir, "copied-at");
  await writeFile(marker, "");
  const copiedAtMs = (await stat(marker)).ctimeMs;
  log(`root: copy of ${lowerDirs.length} layer(s) at ${merged}`);
  return { merged, upper: merged, work: "", mode: "copy", copiedAtMs, async unmount() {} };
}

export async function mountRoot(lowerDirs: string[], scratchDir: string, opts: MountOptions = {}): Promise<MountedRoot> {
  const { signal } = opts;
  const log = opts.onLog ?? (() => {});
  if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "mounting the stage root was aborted", { cause: signal.reason });
  const merged = join(scratchDir, "merged");
  mkdirSync(merged, { recursive: true });
  if (opts.forceCopy) {
    log("root: copy mode (forced)");
    return copyRoot(lowerDirs, scratchDir, signal, log);
  }
  const count = prepareOverlayDirs(await flattenBottom(lowerDirs, scratchDir, opts, log), scratchDir);
  const { failure, plain, volatile } = opts.forceFuse ? { failure: "skipped (fuse-overlayfs asked for)", plain: false, volatile: false } : await mountKernelOverlay(scratchDir, count, signal);
  if (failure === "") {
    log(`root: overlayfs with ${count} lower layer(s) at ${merged}`);
    return mountedOverlay(scratchDir, "overlay", plain, volatile);
  }
  const fuse = await mountFuseOverlay(scratchDir, count, signal);
  if (typeof fuse !== "string") {
    log(`root: fuse-overlayfs with ${count} lower layer(s) at ${merged} (overlayfs: ${failure.replace(/\s*\n\s*/g, " ")})`);
    return fuse;
  }
  log(`root: overlayfs unavailable (${failure.replace(/\s*\n\s*/g, " ")}; fuse-overlayfs: ${fuse}); falling back to copy mode (same layers, slower)`);
  for (const d of ["upper", "work", "l"]) await rm(join(scratchDir, d), { recursive: true, force: true });
  return copyRoot(lowerDirs, scratchDir, signal, log);
}
