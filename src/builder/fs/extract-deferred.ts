/**
 * The last part of a layer's extraction (extractor.ts Extractor.finish): once every entry is
 * written, the extended attributes, then each directory's owner, mode and mtime
 * (children change a directory's mtime, so directories come last), each only on a
 * path that is still reached through real directories.
 */
import { chmodSync, lchownSync, lstatSync, lutimesSync, type Stats } from "node:fs";
import { join } from "node:path";
import { OcibuildError } from "../../errors.js";
import { setXattrs, type XattrOp } from "./native.js";

export interface DeferredDir {
  hostPath: string;
  /** Root-relative resolved path ("" for the root). */
  rel: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
}

/** An extended attribute to set once the layer is written; `rel` as for DeferredDir. */
export type DeferredXattr = XattrOp & { rel: string };

/**
 * Whether `rel` (root-relative, resolved) is reached through real directories only
 * and is not itself a symlink (and is a directory, with `dir`). Paths in `known`
 * (plain directories this extraction made or checked, see resolveDirInRootSync) are
 * answered without a system call; the rest are checked one component at a time.
 */
export function isPlainPath(root: string, rel: string, known: Set<string>, dir = false): boolean {
  if (rel === "" || known.has(rel)) return true;
  const comps = rel.split("/");
  let cur = root;
  for (let i = 0; i < comps.length; i++) {
    const prefix = comps.slice(0, i + 1).join("/");
    cur = join(cur, comps[i]!);
    if (known.has(prefix)) continue;
    let st: Stats;
    try {
      st = lstatSync(cur);
    } catch {
      return false;
    }
    if (st.isSymbolicLink()) return false;
    if (i < comps.length - 1 && !st.isDirectory()) return false;
    if (i === comps.length - 1 && dir && !st.isDirectory()) return false;
  }
  return true;
}

/**
 * Extended attributes waiting to be set, applied in batches: all at once when the
 * layer is written, or sooner whenever the values waiting reach `batchBytes`, so
 * that a layer with large xattrs on many entries keeps memory flat. A path is
 * re-checked when its batch is applied (see applyDeferred).
 */
export class XattrQueue {
  private pending: DeferredXattr[] = [];
  private bytes = 0;

  constructor(
    private readonly root: string,
    /** The extraction's set of known plain directories (the same Set, cleared as it changes). */
    private readonly known: Set<string>,
    private readonly opts: { signal?: AbortSignal; warn: (msg: string) => void },
    private readonly batchBytes = 8 * 1024 * 1024,
  ) {}

  async add(x: DeferredXattr): Promise<void> {
    this.pending.push(x);
    this.bytes += x.value.length + x.name.length;
    if (this.bytes >= this.batchBytes) await this.flush();
  }

  async flush(): Promise<void> {
    const safe: XattrOp[] = [];
    for (const x of this.pending) if (isPlainPath(this.root, x.rel, this.known)) safe.push({ path: x.path, name: x.name, value: x.value });
    this.pending = [];
    this.bytes = 0;
    for (const msg of await setXattrs(safe, this.opts.signal)) this.opts.warn(msg);
  }
}

/** Apply the deferred xattrs and directory metadata of one extraction into `root`. */
export async function applyDeferred(
  root: string,
  known: Set<string>,
  xattrs: XattrQueue,
  dirs: DeferredDir[],
  opts: { isRoot: boolean; signal?: AbortSignal; warn: (msg: string) => void },
): Promise<void> {
  // Deferred work re-checks its paths: a later entry may have replaced a directory
  // (or one of its parents) by a symlink, and chmod/setxattr must not follow it.
  // (Such a replacement cleared `known`, so the check then goes to the filesystem.)
  try {
    await xattrs.flush();
    // Directory metadata last: creating children changes a directory's mtime. Deepest
    // (latest) first; a directory listed twice takes its last entry's metadata, as
    // containerd applies it.
    const applied = new Set<string>();
    for (let i = dirs.length - 1; i >= 0; i--) {
      const d = dirs[i]!;
      if (applied.has(d.hostPath)) continue;
      applied.add(d.hostPath);
      if (!isPlainPath(root, d.rel, known, true)) continue;
      if (opts.isRoot) lchownSync(d.hostPath, d.uid, d.gid);
      chmodSync(d.hostPath, d.mode);
      lutimesSync(d.hostPath, d.mtime, d.mtime);
    }
  } catch (e) {
    if (e instanceof OcibuildError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new OcibuildError("ROOTFS_EXTRACT_FAILED", `cannot set directory metadata in ${root}: ${(e as Error).message}`, {
      cause: e,
      details: code ? { errno: code } : undefined,
    });
  }
}
