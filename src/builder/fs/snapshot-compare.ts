/**
 * How a path of a step's merged tree compares with the same path in the lower view
 * (lowerview.ts), and the layer entry it becomes: the rules of snapshot.ts's module
 * comment, one path at a time.
 */
import type { Stats } from "node:fs";
import { createReadStream, lstatSync, readlinkSync } from "node:fs";
import { open, readdir, readlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { EntryType, LayerEntry } from "../../oci/layer.js";
import { splitDev } from "../../oci/tar-entries.js";
import type { MountedRoot } from "./overlay.js";
import type { LowerEntry, LowerView } from "./lowerview.js";
import type { PendingFile } from "./snapshot-files.js";
import type { DeferredTree } from "./snapshot-trees.js";
import { getXattrs } from "./native.js";
import { lstatOrNull } from "./util.js";

function typeOf(st: Stats): EntryType | null {
  if (st.isFile()) return "file";
  if (st.isDirectory()) return "directory";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isCharacterDevice()) return "char";
  if (st.isBlockDevice()) return "block";
  if (st.isFIFO()) return "fifo";
  return null; // sockets are not representable in a layer
}

async function sameContent(a: string, b: string, size: number): Promise<boolean> {
  if (size === 0) return true;
  const fa = await open(a, "r");
  const fb = await open(b, "r");
  try {
    const bufA = Buffer.allocUnsafe(64 * 1024);
    const bufB = Buffer.allocUnsafe(64 * 1024);
    let pos = 0;
    while (pos < size) {
      const [ra, rb] = await Promise.all([fa.read(bufA, 0, bufA.length, pos), fb.read(bufB, 0, bufB.length, pos)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (ra.bytesRead === 0) return true;
      if (!bufA.subarray(0, ra.bytesRead).equals(bufB.subarray(0, rb.bytesRead))) return false;
      pos += ra.bytesRead;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

/** A layer entry of the snapshot, with what is needed to finish it. */
export interface Item {
  entry: LayerEntry;
  /** Where to read its xattrs from (not for whiteouts): in the merged tree, or the upperdir. */
  hostPath?: string;
  /** dev:ino for files that have other links. */
  inode?: string;
  /** A regular file listed by name only, its entry made later (snapshot-files.ts). */
  pending?: PendingFile;
  /** A pending file found gone: not in the layer. */
  dropped?: boolean;
  /** A subtree left to the workers, its entries read whole later (snapshot-trees.ts). */
  tree?: DeferredTree;
}

/** A file's entry: its stat fields, and its content read from `readPath`. */
export function fileEntry(rel: string, readPath: string, st: { mode: number; uid: number; gid: number; mtime: Date; size: number }): LayerEntry {
  return {
    path: rel,
    type: "file",
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime,
    size: st.size,
    open: (signal?: AbortSignal) => createReadStream(readPath, { signal }),
    sourcePath: readPath,
  };
}

/**
 * Whether a file of the merged tree may have been written by the step, so that
 * equal size and mtime prove nothing (`cp -p`, `touch -r`, `rsync -t`, `tar x`
 * and useradd's backup files keep both). Overlay mode: everything compared is in
 * the upperdir, i.e. was copied up, so yes. Copy mode: only what changed after
 * the copy was made.
 */
function mayBeRewritten(root: MountedRoot, m: Stats): boolean {
  return root.mode !== "copy" || root.copiedAtMs === undefined || m.ctimeMs >= root.copiedAtMs;
}

/**
 * Compare a path in the merged tree with the same path in the lower view. A file
 * whose only change is its mtime (touch, the same bytes written again) counts as
 * unchanged; its content is always compared when it may have been rewritten.
 */
export async function unchanged(root: MountedRoot, m: Stats, mPath: string, l: LowerEntry): Promise<boolean> {
  const ls = l.stats;
  if (typeOf(m) !== typeOf(ls)) return false;
  if ((m.mode & 0o7777) !== (ls.mode & 0o7777) || m.uid !== ls.uid || m.gid !== ls.gid) return false;
  if (m.isSymbolicLink()) return (await readlink(mPath)) === (await readlink(l.hostPath));
  if (m.isCharacterDevice() || m.isBlockDevice()) return m.rdev === ls.rdev;
  if (m.isFile()) {
    if (m.size !== ls.size) return false;
    if (Math.floor(m.mtimeMs) === Math.floor(ls.mtimeMs) && !mayBeRewritten(root, m)) return true;
    return sameContent(mPath, l.hostPath, m.size);
  }
  return true;
}

/**
 * The entry for a path of the merged tree (null for a socket, which a layer cannot
 * hold). `readPath` is where its content and xattrs are read: the same path, or the
 * path in the upperdir where that holds all of it (MountedRoot.plainUpper); `st` may be
 * either's, as they differ only in device and inode numbers.
 */
export function entryFor(rel: string, hostPath: string, st: Stats, readPath = hostPath): Item | null {
  const type = typeOf(st);
  if (type === null) return null;
  if (type === "file") {
    const item: Item = { entry: fileEntry(rel, readPath, st), hostPath: readPath };
    if (st.nlink > 1) {
      // Keyed where it is read: one key space for the whole snapshot, as every file of
      // one is read in the same tree (the upperdir with MountedRoot.plainUpper, else the
      // merged tree). `st` may be the other tree's.
      const k = readPath === hostPath ? st : lstatSync(readPath);
      item.inode = `${k.dev}:${k.ino}`;
    }
    return item;
  }
  const entry: LayerEntry = { path: rel, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
  const item: Item = { entry, hostPath: readPath };
  if (type === "symlink") {
    entry.linkname = readlinkSync(hostPath);
  } else if (type === "char" || type === "block") {
    Object.assign(entry, splitDev(BigInt(st.rdev)));
  }
  return item;
}

/** A whiteout entry (`.wh.name` or `.wh..wh..opq`): an empty file, mode 0, owned by root. */
export function whiteout(rel: string, mtime: Date): Item {
  return {
    entry: { path: rel, type: "file", mode: 0, uid: 0, gid: 0, mtime, size: 0, open: () => Readable.from([]) },
  };
}

function sameXattrs(a: Record<string, Buffer> | undefined, b: Record<string, Buffer> | undefined): boolean {
  const ka = Object.keys(a ?? {}).sort();
  const kb = Object.keys(b ?? {}).sort();
  if (ka.join("\0") !== kb.join("\0")) return false;
  return ka.every((k) => a![k]!.equals(b![k]!));
}

/**
 * Paths present in both trees whose xattrs differ (setcap on a file from a lower
 * layer changes nothing else). Overlay mode looks only at what the upperdir holds;
 * copy mode at everything; neither descends into a directory the lower view does not
 * have as a directory (all of it is new). Two batched reads, whatever the number of files.
 */
export async function xattrChanges(root: MountedRoot, view: LowerView, signal?: AbortSignal): Promise<Set<string>> {
  const scanBase = root.mode !== "copy" ? root.upper : root.merged;
  const pairs: { rel: string; merged: string; lower: string }[] = [];
  const walk = async (comps: string[]): Promise<void> => {
    signal?.throwIfAborted();
    for (const name of await readdir(join(scanBase, ...comps))) {
      const c = [...comps, name];
      const st = await lstatOrNull(join(scanBase, ...c));
      if (st === null || (st.isCharacterDevice() && st.rdev === 0)) continue;
      const l = await view.lookup(c);
      if (l !== null && typeOf(l.stats) === typeOf(st)) pairs.push({ rel: joinRel(c), merged: join(root.merged, ...c), lower: l.hostPath });
      // Below a directory the lower view lacks (new, or replacing a non-directory) nothing has a
      // lower counterpart: its whole subtree is new and has no xattrs to compare.
      if (st.isDirectory() && l !== null && l.stats.isDirectory()) await walk(c);
    }
  };
  await walk([]);
  const out = new Set<string>();
  if (pairs.length === 0) return out;
  const mx = await getXattrs(pairs.map((p) => p.merged), signal);
  const lx = await getXattrs(pairs.map((p) => p.lower), signal);
  for (const p of pairs) if (!sameXattrs(mx.get(p.merged), lx.get(p.lower))) out.add(p.rel);
  return out;
}

export function joinRel(comps: readonly string[]): string {
  return comps.join("/");
}

/** The extended attributes of the items that have a host path, read in one batch and set on their entries. */
export async function attachXattrs(items: Item[], signal?: AbortSignal): Promise<void> {
  const xattrs = await getXattrs(items.flatMap((i) => (i.hostPath === undefined ? [] : [i.hostPath])), signal);
  for (const item of items) {
    const x = item.hostPath === undefined ? undefined : xattrs.get(item.hostPath);
    if (x !== undefined) item.entry.xattrs = x;
  }
}
