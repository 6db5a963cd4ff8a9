/**
 * The change a step made to its root, as layer entries.
 *
 * Both root modes give the same entries, because both compare the merged tree
 * with the lower view (lowerview.ts) instead of trusting overlay's own
 * bookkeeping: in overlay mode the upperdir only tells where to look (a path
 * absent from it is unchanged, so only the upperdir's names are visited, or every
 * name of a directory the step made opaque), in copy mode everything is compared.
 * The cost of an overlay snapshot follows the size of the change, not of the
 * image or the number of its layers. Rules:
 *  - a path only in the merged tree is added (directories with their whole subtree);
 *  - a path whose type, mode, owner, link target, device or content differ is
 *    included; a copy-up that changed nothing (touch, chmod to the same mode) is not.
 *    Content is compared whenever a file may have been written (in overlay mode,
 *    everything in the upperdir; in copy mode, what changed since the copy), never
 *    inferred from an equal size and mtime, which `cp -p`, `touch -r` and useradd's
 *    backups keep;
 *  - a lower path missing from the merged tree becomes `.wh.name`; a directory
 *    (other than the root) that lost every lower entry (rm -rf d && mkdir d)
 *    becomes opaque (`.wh..wh..opq`) instead, followed by its new content;
 *  - directories are included as parents of anything included below them.
 * Entries come out sorted (parents first, names in byte order) with hardlinks
 * between included files kept. Read them (and stream them into writeLayer)
 * BEFORE unmounting the root: file contents are opened from the merged tree.
 */
import type { Stats } from "node:fs";
import { createReadStream } from "node:fs";
import { lstat, open, readdir, readlink, rmdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { EntryType, LayerEntry } from "../../oci/layer.js";
import { byUtf8, splitDev } from "../../oci/tar-entries.js";
import { OcibuildError } from "../../errors.js";
import type { MountedRoot } from "./overlay.js";
import { LowerView, type LowerEntry } from "./lowerview.js";
import { areOpaque, getXattrs } from "./native.js";
import { lstatOrNull } from "./util.js";
import { WH_OPAQUE, WH_PREFIX } from "./path.js";

export interface SnapshotOptions {
  /**
   * Root-relative paths ("etc/resolv.conf", "/proc" also accepted) left out of the
   * layer: mount points the sandbox created. An excluded directory is still
   * included if something below it (not excluded) changed.
   */
  exclude?: string[];
  signal?: AbortSignal;
}


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

interface Item {
  entry: LayerEntry;
  /** Where to read its xattrs from (not for whiteouts). */
  hostPath?: string;
  /** dev:ino for files that have other links. */
  inode?: string;
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
async function unchanged(root: MountedRoot, m: Stats, mPath: string, l: LowerEntry): Promise<boolean> {
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


async function entryFor(rel: string, hostPath: string, st: Stats): Promise<Item | null> {
  const type = typeOf(st);
  if (type === null) return null;
  const entry: LayerEntry = { path: rel, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
  const item: Item = { entry, hostPath };
  if (type === "file") {
    entry.size = st.size;
    entry.open = (signal?: AbortSignal) => createReadStream(hostPath, { signal });
    entry.sourcePath = hostPath;
    if (st.nlink > 1) item.inode = `${st.dev}:${st.ino}`;
  } else if (type === "symlink") {
    entry.linkname = await readlink(hostPath);
  } else if (type === "char" || type === "block") {
    Object.assign(entry, splitDev(BigInt(st.rdev)));
  }
  return item;
}

function whiteout(rel: string, mtime: Date): Item {
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
 * copy mode at everything. Two batched reads, whatever the number of files.
 */
async function xattrChanges(root: MountedRoot, view: LowerView, signal?: AbortSignal): Promise<Set<string>> {
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
      if (st.isDirectory()) await walk(c);
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

function joinRel(comps: readonly string[]): string {
  return comps.join("/");
}

export async function* snapshotChanges(root: MountedRoot, lowerDirs: string[], opts: SnapshotOptions = {}): AsyncIterable<LayerEntry> {
  const { signal } = opts;
  const view = await LowerView.open(lowerDirs, signal);
  const excluded = new Set((opts.exclude ?? []).map((p) => p.split("/").filter((c) => c !== "" && c !== ".").join("/")));
  const overlay = root.mode !== "copy";
  // fuse-overlayfs marks opaque directories its own way: every directory it holds is
  // compared whole (merged and lower names), which is right whether or not it is opaque.
  const knownOpacity = root.mode === "overlay";
  const xattrChanged = view.empty ? new Set<string>() : await xattrChanges(root, view, signal);

  const inUpper = async (comps: readonly string[]): Promise<boolean> => {
    if (!overlay) return true;
    return (await lstatOrNull(join(root.upper, ...comps))) !== null;
  };

  /**
   * Everything at and under `comps` in the merged tree, appended to `out` (one array
   * for a whole subtree: `push(...subtree)` overflows the call stack past ~120k
   * entries, a large node_modules, and copied every subtree once per level).
   */
  const fullInto = async (comps: string[], st: Stats, out: Item[]): Promise<void> => {
    signal?.throwIfAborted();
    const rel = joinRel(comps);
    const hostPath = join(root.merged, ...comps);
    const self = await entryFor(rel, hostPath, st);
    const at = out.length;
    if (self !== null) out.push(self);
    if (st.isDirectory()) {
      const names = (await readdir(hostPath)).sort(byUtf8);
      for (const name of names) {
        const cst = await lstatOrNull(join(hostPath, name));
        if (cst !== null) await fullInto([...comps, name], cst, out);
      }
    }
    // As withSelf: an excluded entry is left out, unless it is a directory with something below it.
    if (self !== null && excluded.has(rel) && (self.entry.type !== "directory" || out.length === at + 1)) out.splice(at, 1);
  };
  const full = async (comps: string[], st: Stats): Promise<Item[]> => {
    const out: Item[] = [];
    await fullInto(comps, st, out);
    return out;
  };

  const withSelf = (rel: string, self: Item | null, below: Item[]): Item[] => {
    if (self === null) return below;
    if (excluded.has(rel) && (self.entry.type !== "directory" || below.length === 0)) return below;
    return [self, ...below];
  };

  /**
   * The names to compare in directory `comps`, and whether a name is visible in
   * the lower view. Overlay mode, when this step's upper directory is not opaque:
   * only the names the upperdir holds (everything else is the lower entry, shown
   * unchanged), so the cost follows the change and not the size of the directory
   * or the number of layers. Otherwise (copy mode, or a directory the step
   * replaced wholesale) every name of both trees.
   */
  const candidates = async (comps: string[]): Promise<{ names: string[]; inLower: (name: string) => Promise<boolean>; lowerNames: () => Promise<string[]> }> => {
    const listLower = async () => (await view.list(comps)) ?? [];
    if (overlay) {
      const upperDir = join(root.upper, ...comps);
      const [opaque] = knownOpacity ? await areOpaque([upperDir], signal) : [true];
      if (!opaque) {
        return {
          names: (await readdir(upperDir)).sort(byUtf8),
          inLower: async (name) => (await view.lookup([...comps, name])) !== null,
          lowerNames: listLower,
        };
      }
    }
    const mergedNames = await readdir(join(root.merged, ...comps));
    const lowerNames = await listLower();
    const lowerSet = new Set(lowerNames);
    return {
      names: [...new Set([...mergedNames, ...lowerNames])].sort(byUtf8),
      inLower: async (name) => lowerSet.has(name),
      lowerNames: async () => lowerNames,
    };
  };

  /**
   * The change under directory `comps`, present as a directory in both trees.
   * Returns the items below it (not itself).
   */
  const diffDir = async (comps: string[]): Promise<Item[]> => {
    signal?.throwIfAborted();
    const hostDir = join(root.merged, ...comps);
    const { names, inLower, lowerNames } = await candidates(comps);
    const changes = new Map<string, Item[]>();
    const deleted: string[] = [];
    for (const name of names) {
      const c = [...comps, name];
      const rel = joinRel(c);
      const mPath = join(hostDir, name);
      const m = await lstatOrNull(mPath);
      if (m === null) {
        if (!excluded.has(rel) && (await inLower(name))) deleted.push(name);
        continue;
      }
      if (!(await inLower(name))) {
        changes.set(name, await full(c, m));
        continue;
      }
      if (!(await inUpper(c))) {
        continue;
      }
      const l = await view.lookup(c);
      if (l === null) {
        changes.set(name, await full(c, m));
        continue;
      }
      if (m.isDirectory() && l.stats.isDirectory()) {
        const below = await diffDir(c);
        const same = !xattrChanged.has(rel) && (await unchanged(root, m, mPath, l));
        if (!same || below.length > 0) changes.set(name, withSelf(rel, await entryFor(rel, mPath, m), below));
        continue;
      }
      if (!xattrChanged.has(rel) && (await unchanged(root, m, mPath, l))) continue;
      changes.set(name, await full(c, m));
    }
    if (deleted.length === 0) return [...changes.values()].flat();
    const dirMtime = (await lstat(hostDir)).mtime;
    if (comps.length > 0 && deleted.length === (await lowerNames()).length) {
      // Every lower entry is gone (rm -rf d && mkdir d): an opaque directory; what it holds now is all new.
      return [whiteout(joinRel([...comps, WH_OPAQUE]), dirMtime), ...[...changes.values()].flat()];
    }
    const keyed: [string, Item[]][] = [...changes];
    for (const name of deleted) keyed.push([`${WH_PREFIX}${name}`, [whiteout(joinRel([...comps, `${WH_PREFIX}${name}`]), dirMtime)]]);
    keyed.sort((a, b) => byUtf8(a[0], b[0]));
    return keyed.flatMap(([, items]) => items);
  };

  let items: Item[];
  try {
    if (view.empty) {
      const names = (await readdir(root.merged)).sort(byUtf8);
      items = [];
      for (const name of names) {
        const st = await lstatOrNull(join(root.merged, name));
        if (st !== null) await fullInto([name], st, items);
      }
    } else {
      items = await diffDir([]);
    }
  } catch (e) {
    if (signal?.aborted) throw new OcibuildError("SNAPSHOT_ABORTED", "snapshot was aborted", { cause: signal.reason });
    if (e instanceof OcibuildError) throw e;
    throw new OcibuildError("SNAPSHOT_FAILED", `cannot compute the change in ${root.merged}: ${(e as Error).message}`, { cause: e });
  }

  // Extended attributes (file capabilities, user.*) of what is included, in one batch.
  const xattrs = await getXattrs(items.flatMap((i) => (i.hostPath === undefined ? [] : [i.hostPath])), signal);
  for (const item of items) {
    const x = item.hostPath === undefined ? undefined : xattrs.get(item.hostPath);
    if (x !== undefined) item.entry.xattrs = x;
  }

  const firstLink = new Map<string, string>();
  for (const item of items) {
    if (item.inode !== undefined) {
      const first = firstLink.get(item.inode);
      if (first !== undefined) {
        const { path, mode, uid, gid, mtime } = item.entry;
        yield { path, type: "hardlink", mode, uid, gid, mtime, linkname: first };
        continue;
      }
      firstLink.set(item.inode, item.entry.path);
    }
    yield item.entry;
  }
}

/**
 * Remove the excluded mount points from an upperdir that is kept as the layer's
 * directory, with the same rule as snapshotChanges: excluded files go; an
 * excluded directory goes only when nothing else is left in it. Deepest first.
 * Never follows a symlink: a path whose parent is not a real directory (the RUN
 * replaced it) is left alone.
 */
export async function pruneExcluded(upper: string, exclude: string[]): Promise<void> {
  const paths = [...new Set(exclude.map((p) => p.split("/").filter((c) => c !== "" && c !== ".")))]
    .filter((c) => c.length > 0 && !c.includes(".."))
    .sort((a, b) => b.length - a.length);
  for (const comps of paths) {
    let real = true;
    for (let i = 1; i < comps.length && real; i++) {
      const st = await lstatOrNull(join(upper, ...comps.slice(0, i)));
      real = st !== null && st.isDirectory();
    }
    if (!real) continue;
    const hostPath = join(upper, ...comps);
    const st = await lstatOrNull(hostPath);
    if (st === null) continue;
    if (st.isDirectory()) {
      await rmdir(hostPath).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "ENOTEMPTY" && e.code !== "EEXIST") throw e;
      });
    } else await unlink(hostPath);
  }
}

