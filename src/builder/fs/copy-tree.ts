/**
 * The copy primitives of COPY/ADD: walking what a copy reads (shared by the copy
 * and by its cache key, so both see the same files), copying trees and entries
 * with Docker's ownership, mode and mtime rules, and hashing the walk.
 */
import {
  chmodSync, closeSync, constants as fsc, fchmodSync, futimesSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, readSync, readdirSync, readlinkSync, rmSync, symlinkSync,
  writeSync,
} from "node:fs";
import type { Stats } from "node:fs";
import { copyFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import type { IgnoreMatcher } from "../../dockerfile/index.js";
import type { ModeFn } from "./chmod.js";
import type { SourceMatch, SourceTree } from "../sources.js";
import { lstatOrNullSync } from "./util.js";

export interface Owner {
  uid: number;
  gid: number;
}

export interface CopyPlan {
  owner?: Owner; // undefined: keep the source's (stages/images) or 0:0 (context)
  contextSource: boolean;
  modeFn?: ModeFn;
  /** Mode of the directories made on the way to the destination (not of copied ones); 0755 when unset. */
  newDirMode?: number;
  exclude?: IgnoreMatcher;
  /** ADD: local tar archives are extracted into the destination, owned by `owner` (--chown) or as the archive says. */
  extract?: { owner?: Owner };
}

/**
 * Content hashes of everything a copy (or a bind mount) of `matches` reads, keyed by path
 * in the tree. `contentsOnly`: a directory match stands for its contents only (COPY
 * copies what is in it, never the directory's own mode), so its mode is left out.
 */
export async function hashMatches(
  tree: SourceTree,
  matches: readonly SourceMatch[],
  hashFile: (path: string, st: Stats) => Promise<string>,
  opts: { exclude?: IgnoreMatcher; signal?: AbortSignal; contentsOnly?: boolean } = {},
): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const plan: CopyPlan = { contextSource: true, exclude: opts.exclude };
  for (const m of matches) {
    for await (const e of walkMatch(tree, m, plan, opts.signal)) {
      const st = e.stats;
      const key = e.srcRel === "" ? "." : e.srcRel;
      if (e.rel !== "") keyUnlistedParents(files, m, e);
      const mode = (st.mode & 0o7777).toString(8);
      let v: string;
      if (st.isDirectory()) {
        // (Another match may copy the same directory as an entry: then its mode counts.)
        if (e.rel === "" && opts.contentsOnly) {
          files[key] ??= "dir";
          continue;
        }
        v = `dir:${mode}`;
      } else if (st.isSymbolicLink()) v = `link:${await readlink(e.hostPath)}`;
      else if (st.isFile()) v = `file:${mode}:${await hashFile(e.hostPath, st)}`;
      else continue;
      files[key] = v;
    }
  }
  return files;
}

/**
 * The directories above `e` that the walk passed without listing them (ignored, but
 * holding re-included paths): the copy makes them with their modes (copyTree's ensureDir).
 */
function keyUnlistedParents(files: Record<string, string>, m: SourceMatch, e: Walked): void {
  let rel = e.rel;
  let srcRel = e.srcRel;
  for (let i = rel.lastIndexOf("/"); i !== -1; i = rel.lastIndexOf("/")) {
    rel = rel.slice(0, i);
    srcRel = srcRel.slice(0, srcRel.lastIndexOf("/"));
    if (files[srcRel] !== undefined) return;
    files[srcRel] = `dir:${(lstatSync(join(m.hostPath, rel)).mode & 0o7777).toString(8)}`;
  }
}

interface Walked {
  /** Path below the match ("" for the match itself). */
  rel: string;
  /** Path in the source tree. */
  srcRel: string;
  hostPath: string;
  stats: Stats;
}

/**
 * Everything a copy of `m` reads, parents before children, names sorted, with
 * .dockerignore (context) and --exclude applied. Used by the copy and by its
 * cache key alike, so both see the same files.
 */
export async function* walkMatch(tree: SourceTree, m: SourceMatch, plan: CopyPlan, signal?: AbortSignal): AsyncGenerator<Walked> {
  yield { rel: "", srcRel: m.rel, hostPath: m.hostPath, stats: m.stats };
  if (!m.stats.isDirectory()) return;
  // .dockerignore applies where the files really are: below a source reached through a
  // symlink (pdir -> dir), to "dir/...", not to "pdir/...".
  const ignoreBase = m.realRel;
  async function* below(dir: string, rel: string, srcRel: string): AsyncGenerator<Walked> {
    signal?.throwIfAborted();
    // Synchronous calls: a context walk is thousands of tiny metadata calls, and a
    // thread-pool round trip each was most of its time.
    for (const name of readdirSync(dir).sort()) {
      const childSrc = srcRel === "" ? name : `${srcRel}/${name}`;
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const childReal = ignoreBase === m.rel ? childSrc : ignoreBase === "" ? childRel : `${ignoreBase}/${childRel}`;
      // (Not path.join: a context walk makes tens of thousands of these, and join's
      // normalisation was a fifth of the walk; `dir` is already normal.)
      const hostPath = dir.endsWith("/") ? dir + name : `${dir}/${name}`;
      const st = lstatSync(hostPath);
      if (plan.exclude?.ignores(childSrc)) continue;
      const ignored = plan.contextSource && tree.ignore?.ignores(childReal);
      // An ignored directory may still hold re-included paths ("!dir/keep"): walk it without yielding it.
      if (ignored && !(st.isDirectory() && tree.ignore!.mayMatchUnder(childReal))) continue;
      if (!ignored) yield { rel: childRel, srcRel: childSrc, hostPath, stats: st };
      if (st.isDirectory()) yield* below(hostPath, childRel, childSrc);
    }
  }
  yield* below(m.hostPath, "", m.rel);
}

/**
 * What creating an entry in a directory this copy made gives it, so the copy can skip
 * the calls that would not change anything: the directory started empty (nothing to
 * look up or replace), and a new entry belongs to this process's user and to its group,
 * or to the directory's group when the directory is setgid.
 */
interface FreshDir {
  uid: number;
  gid: number;
}

export async function copyTree(tree: SourceTree, m: SourceMatch, dstDir: string, plan: CopyPlan, signal?: AbortSignal): Promise<void> {
  const dirs: { path: string; stats: Stats }[] = [];
  // Directories that exist (the destination, and each one met or made by the walk), and
  // those this copy made: a large tree copied to a new place (most COPYs) then costs a
  // copy and a utimes per file rather than six calls.
  const present = new Set<string>([dstDir]);
  const made = new Set<string>();
  const owners = new Map<string, FreshDir>();
  const freshDir = (dir: string): FreshDir => {
    let f = owners.get(dir);
    if (f) return f;
    // Asked once per directory: its group and setgid bit as made (metadata is applied at the end).
    const st = lstatSync(dir);
    f = { uid: process.geteuid?.() ?? st.uid, gid: st.mode & 0o2000 ? st.gid : (process.getegid?.() ?? st.gid) };
    owners.set(dir, f);
    return f;
  };
  // An ignored directory that holds re-included paths is made when the first of them is
  // copied, with its source's metadata like any copied directory (as BuildKit, whose
  // context holds the parents of what .dockerignore keeps).
  const ensureDir = (dir: string): void => {
    if (present.has(dir)) return;
    ensureDir(dir.slice(0, dir.lastIndexOf("/")));
    const existing = lstatOrNullSync(dir);
    if (!existing?.isDirectory()) {
      if (existing) rmSync(dir, { force: true });
      mkdirSync(dir);
      made.add(dir);
      dirs.push({ path: dir, stats: lstatSync(join(m.hostPath, dir.slice(dstDir.length + 1))) });
    }
    present.add(dir);
  };
  for await (const e of walkMatch(tree, m, plan, signal)) {
    if (e.rel === "") continue;
    const dst = join(dstDir, e.rel);
    const parent = dst.slice(0, dst.lastIndexOf("/")) || "/";
    const inFresh = made.has(parent);
    if (e.stats.isDirectory()) {
      if (inFresh) {
        mkdirSync(dst);
        made.add(dst);
      } else {
        ensureDir(parent);
        const existing = lstatOrNullSync(dst);
        if (existing && !existing.isDirectory()) rmSync(dst, { force: true });
        if (!existing || !existing.isDirectory()) {
          mkdirSync(dst);
          made.add(dst);
        }
      }
      present.add(dst);
      dirs.push({ path: dst, stats: e.stats });
    } else {
      ensureDir(parent);
      await copyEntry(e.hostPath, e.stats, dst, plan, inFresh ? freshDir(parent) : undefined);
    }
  }
  // Directory metadata last (children change a directory's mtime), deepest first.
  for (const d of dirs.reverse()) applyMeta(d.path, d.stats, plan, true);
}

/** Files up to this size are copied with blocking calls; bigger ones off the event loop. */
const SMALL_COPY = 1 << 20;

/**
 * A small file copied through a buffer into a new `dst` (O_EXCL: never through
 * whatever is there; O_NOFOLLOW on the source: the regular file the walk saw, not a
 * symlink put in its place; O_NONBLOCK: nor a fifo, which would block), with the source's mode. Not copyFile: libuv truncates
 * the file it creates, and ext4 (auto_da_alloc) takes a truncate to 0 for a file
 * being replaced, starting its writeback on close: a blocking flush per file, which
 * made copying many small files twice as slow.
 */
function copySmallFileSync(src: string, dst: string, st: Stats): void {
  const mode = st.mode & 0o7777;
  const from = openSync(src, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const to = openSync(dst, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      // One read for a file that did not change since the walk; a loop for one that grew.
      const buf = Buffer.allocUnsafe(Math.max(1, Math.min(st.size, SMALL_COPY)));
      for (let n = readSync(from, buf, 0, buf.length, null); n > 0; n = readSync(from, buf, 0, buf.length, null)) {
        for (let off = 0; off < n; ) off += writeSync(to, buf, off, n - off);
      }
      fchmodSync(to, mode);
      // The source's times through the descriptor (a chown or chmod after this keeps them).
      futimesSync(to, st.atime, st.mtime);
    } finally {
      closeSync(to);
    }
  } finally {
    closeSync(from);
  }
}


/**
 * Copy one file or symlink to `dst`, with the plan's owner, mode and the source's
 * times. `fresh`: `dst` is in a directory this copy made (so nothing is there yet),
 * and what a new entry there is owned by.
 */
export async function copyEntry(src: string, st: Stats, dst: string, plan: CopyPlan, fresh?: FreshDir): Promise<void> {
  if (!fresh) {
    const existing = lstatOrNullSync(dst);
    if (existing?.isDirectory()) {
      throw new OcibuildError("BUILD_COPY_OVER_DIRECTORY", `cannot copy the file "${src}" over the existing directory "${dst}"`);
    }
    if (existing) rmSync(dst, { force: true });
  }
  if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(src), dst);
    applyMeta(dst, st, plan, false, true, fresh && { ...fresh, mode: -1 });
    return;
  }
  if (st.isFile()) {
    const small = st.size <= SMALL_COPY;
    if (small) copySmallFileSync(src, dst, st);
    else await copyFile(src, dst, fsc.COPYFILE_FICLONE);
    // The copy gives the new file the source's mode (libuv's copyfile sets it with fchmod too).
    applyMeta(dst, st, plan, false, false, fresh && { ...fresh, mode: st.mode & 0o7777 }, small);
    return;
  }
  // Sockets, fifos and device nodes in a source tree are not copied.
}

/**
 * Docker's metadata for a copied entry: the plan's owner (else the source's), the mode
 * (--chmod applied), the source's times. `now`: what the entry already has, when
 * known (a just-created one), so calls that would change nothing are skipped.
 */
export function applyMeta(
  path: string,
  st: Stats,
  plan: CopyPlan,
  isDir: boolean,
  isLink = false,
  now?: { uid: number; gid: number; mode: number },
  /** The times are already the source's (set through the new file's descriptor). */
  timesSet = false,
): void {
  const uid = plan.owner ? plan.owner.uid : st.uid;
  const gid = plan.owner ? plan.owner.gid : st.gid;
  if (!now || now.uid !== uid || now.gid !== gid) lchownSync(path, uid, gid);
  if (!isLink) {
    const mode = plan.modeFn ? plan.modeFn(st.mode & 0o7777, isDir) : st.mode & 0o7777;
    // chown clears setuid/setgid on a file, so after one the mode is always set again.
    if (!now || now.mode !== mode || now.uid !== uid || now.gid !== gid) chmodSync(path, mode);
  }
  if (!timesSet) lutimesSync(path, st.atime, st.mtime);
}
