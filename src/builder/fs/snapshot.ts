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
 * BEFORE unmounting the root: file contents are opened from the merged tree (or, for
 * what the step added or replaced on a plain kernel overlay, from the upperdir, which
 * holds all of it: see MountedRoot.plainUpper).
 */
import { readdirSync, type Dirent, type Stats } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { LayerEntry, TarSegment } from "../../oci/layer.js";
import { byUtf8 } from "../../oci/tar-entries.js";
import { OcibuildError } from "../../errors.js";
import type { MountedRoot } from "./overlay.js";
import { LowerView } from "./lowerview.js";
import { areOpaque } from "./native.js";
import { lstatOrNull, lstatOrNullSync } from "./util.js";
import { WH_OPAQUE, WH_PREFIX } from "./path.js";
import { attachXattrs, entryFor, joinRel, unchanged, whiteout, xattrChanges, type Item } from "./snapshot-compare.js";
import { PendingFiles, Taken, addPacked, entryOf, pendingItem, written, type PendingOptions } from "./snapshot-files.js";
import { DeferredTrees, Step } from "./snapshot-trees.js";
import { monotonicMs } from "../../clock.js";

export interface SnapshotOptions {
  /**
   * Root-relative paths ("etc/resolv.conf", "/proc" also accepted) left out of the
   * layer: mount points the sandbox created. An excluded directory is still
   * included if something below it (not excluded) changed.
   */
  exclude?: string[];
  signal?: AbortSignal;
  /**
   * Called when nothing more will be read under root.merged, before the first entry:
   * with MountedRoot.plainUpper every file is read in the upperdir, so the root can be
   * unmounted while the layer is written. Not called otherwise. `changes`: how many
   * paths the layer holds, about (a file found gone since is left out).
   */
  onMergedDone?: (changes: number) => void;
  /**
   * snapshotBatches only, for a layer writer given the same sourceDateEpoch: small
   * files may come as TarSegments, packed by worker threads (snapshot-files.ts).
   */
  pack?: { sourceDateEpoch?: number };
  /** False: every file is read on this thread, as when there are few (default true: many are read by workers). */
  fileWorkers?: boolean;
}

export async function* snapshotChanges(root: MountedRoot, lowerDirs: string[], opts: SnapshotOptions = {}): AsyncIterable<LayerEntry> {
  for await (const list of snapshotBatches(root, lowerDirs, { ...opts, pack: undefined })) yield* list as LayerEntry[];
}

/** Entries given to the tar at once (see LayerEntries). */
const ENTRIES_AT_ONCE = 256;

/**
 * snapshotChanges' entries, in arrays of up to ENTRIES_AT_ONCE, with tar segments among
 * them when `opts.pack` says so: writeLayer awaits each array, not each entry (two async
 * generators' steps per entry cost ~0.3 s of a snapshot of 100,000 files).
 */
export async function* snapshotBatches(root: MountedRoot, lowerDirs: string[], opts: SnapshotOptions = {}): AsyncGenerator<(LayerEntry | TarSegment)[]> {
  const { signal } = opts;
  const epoch = opts.pack?.sourceDateEpoch;
  const diff = await TreeDiff.open(root, lowerDirs, opts, { signal, pack: opts.pack && { epoch }, workers: opts.fileWorkers });
  const files = diff.files;
  try {
    let items: Item[];
    try {
      items = await diff.changes();
      await files.walkDone(items);
    } catch (e) {
      if (signal?.aborted) throw new OcibuildError("SNAPSHOT_ABORTED", "snapshot was aborted", { cause: signal.reason });
      if (e instanceof OcibuildError) throw e;
      throw new OcibuildError("SNAPSHOT_FAILED", `cannot compute the change in ${root.merged}: ${(e as Error).message}`, { cause: e });
    }
    // Extended attributes (file capabilities, user.*) of what is included, in one batch;
    // a file still pending has no hostPath yet: the workers read its xattrs with it.
    await attachXattrs(items, signal);
    // Subtrees left to the workers: many changes, however few items.
    if (diff.upperReads) opts.onMergedDone?.(diff.trees === undefined ? items.length : Infinity);

    const firstLink = new Map<string, string>();
    let out: (LayerEntry | TarSegment)[] = [];
    let taken = 0;
    let segment: TarSegment | undefined;
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      // Let the garbage collector have what is done with: 100,000 items kept to the end made
      // each of the collections a layer's buffers set off mark them all again.
      (items as (Item | undefined)[])[i] = undefined;
      if (item.tree !== undefined) {
        const c = await diff.trees!.take(item.tree);
        for (let s = c.next(); ; s = c.next()) {
          if (typeof s !== "number") s = await s;
          if (s === Step.END) break;
          if (s === Step.NONE) continue;
          if (s === Step.PACKED) segment = addPacked(out, segment, files.packed, epoch);
          else out.push(entryOf(c.item!, firstLink));
          if (++taken % ENTRIES_AT_ONCE !== 0) continue;
          yield out;
          written(out);
          out = [];
        }
        continue;
      }
      let t = files.take(item);
      if (typeof t !== "number") t = await t;
      if (t === Taken.NONE) continue;
      if (t === Taken.PACKED) segment = addPacked(out, segment, files.packed, epoch);
      else out.push(entryOf(item, firstLink));
      if (++taken % ENTRIES_AT_ONCE !== 0) continue;
      yield out;
      written(out);
      out = [];
    }
    if (out.length > 0) yield out;
  } finally {
    files.close();
  }
}

/** The names to compare in one directory, and whether a name is visible in the lower view. */
interface Candidates {
  names: string[];
  inLower: (name: string) => Promise<boolean>;
  lowerNames: () => Promise<string[]>;
}

/** A path of the walk: root-relative, in the merged tree, and where its content and xattrs are read. */
interface WalkPath {
  rel: string;
  host: string;
  read: string;
}

function byName(a: Dirent, b: Dirent): number {
  return byUtf8(a.name, b.name);
}

/** How long the synchronous walk of a new subtree runs before it lets the event loop in. */
const SLICE_MS = 8;

/** One snapshot's walk: the merged tree against the lower view, as sorted items. */
class TreeDiff {
  private readonly excluded: Set<string>;
  private readonly overlay: boolean;
  /**
   * fuse-overlayfs marks opaque directories its own way: every directory it holds is
   * compared whole (merged and lower names), which is right whether or not it is opaque.
   */
  private readonly knownOpacity: boolean;
  private readonly signal: AbortSignal | undefined;
  /**
   * Content and xattrs of what fullInto walks are read in the upperdir (see
   * MountedRoot.plainUpper): every file, so that once the walk's own reads are done
   * nothing more is read in the merged tree.
   */
  readonly upperReads: boolean;
  /** Where fullInto's paths are read: `readBase`/rel (the upperdir, or the merged tree). */
  readonly readBase: string;
  /** When the synchronous walk last let the event loop run (see breathe). */
  private sliceStart = monotonicMs();

  /** The regular files the walk lists by name (read as it goes on, when there are many). */
  readonly files: PendingFiles;
  /** The subtrees the walk left to the workers, once it has (past BULK_MIN files). */
  trees: DeferredTrees | undefined;
  private readonly pack: PendingOptions["pack"];

  /** The lower view of `lowerDirs`, and the paths in both trees whose xattrs differ. */
  static async open(root: MountedRoot, lowerDirs: string[], opts: SnapshotOptions, pending: PendingOptions): Promise<TreeDiff> {
    const view = await LowerView.open(lowerDirs, opts.signal);
    const xattrChanged = view.empty ? new Set<string>() : await xattrChanges(root, view, opts.signal);
    return new TreeDiff(root, view, xattrChanged, opts, pending);
  }

  private constructor(
    private readonly root: MountedRoot,
    private readonly view: LowerView,
    private readonly xattrChanged: ReadonlySet<string>,
    opts: SnapshotOptions,
    pending: PendingOptions,
  ) {
    this.excluded = new Set((opts.exclude ?? []).map((p) => p.split("/").filter((c) => c !== "" && c !== ".").join("/")));
    this.overlay = root.mode !== "copy";
    this.knownOpacity = root.mode === "overlay";
    this.signal = opts.signal;
    this.upperReads = root.mode === "overlay" && root.plainUpper === true;
    this.readBase = this.upperReads ? root.upper : root.merged;
    this.files = new PendingFiles(this.readBase, pending);
    this.pack = pending.pack;
  }

  /** Every change, in layer order (parents first, names in byte order). */
  async changes(): Promise<Item[]> {
    if (!this.view.empty) return this.diffDir([]);
    const items: Item[] = [];
    for (const name of (await readdir(this.root.merged)).sort(byUtf8)) {
      const host = join(this.root.merged, name);
      const st = await lstatOrNull(host);
      if (st !== null) await this.fullInto({ rel: name, host, read: this.upperReads ? join(this.root.upper, name) : host }, st, items);
    }
    return items;
  }

  /**
   * The change under directory `comps`, present as a directory in both trees.
   * Returns the items below it (not itself).
   */
  private async diffDir(comps: string[]): Promise<Item[]> {
    this.signal?.throwIfAborted();
    const hostDir = join(this.root.merged, ...comps);
    const { names, inLower, lowerNames } = await this.candidates(comps);
    const changes = new Map<string, Item[]>();
    const deleted: string[] = [];
    for (const name of names) {
      const c = [...comps, name];
      const m = await lstatOrNull(join(hostDir, name));
      if (m === null) {
        if (!this.excluded.has(joinRel(c)) && (await inLower(name))) deleted.push(name);
        continue;
      }
      const change = (await inLower(name)) ? await this.changeOf(c, m) : await this.full(c, m);
      if (change !== undefined) changes.set(name, change);
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
  }

  /** The items for path `c` (stats `m`), which the lower view has too; undefined when it is unchanged. */
  private async changeOf(c: string[], m: Stats): Promise<Item[] | undefined> {
    if (!(await this.inUpper(c))) return undefined;
    const l = await this.view.lookup(c);
    if (l === null) return this.full(c, m);
    const rel = joinRel(c);
    const mPath = join(this.root.merged, ...c);
    if (m.isDirectory() && l.stats.isDirectory()) {
      const below = await this.diffDir(c);
      const same = !this.xattrChanged.has(rel) && (await unchanged(this.root, m, mPath, l));
      return !same || below.length > 0 ? this.withSelf(rel, entryFor(rel, mPath, m), below) : undefined;
    }
    if (!this.xattrChanged.has(rel) && (await unchanged(this.root, m, mPath, l))) return undefined;
    return this.full(c, m);
  }

  /**
   * The names to compare in directory `comps`. Overlay mode, when this step's upper
   * directory is not opaque: only the names the upperdir holds (everything else is
   * the lower entry, shown unchanged), so the cost follows the change and not the
   * size of the directory or the number of layers. Otherwise (copy mode, or a
   * directory the step replaced wholesale) every name of both trees.
   */
  private async candidates(comps: string[]): Promise<Candidates> {
    const listLower = async () => (await this.view.list(comps)) ?? [];
    if (this.overlay) {
      const upperDir = join(this.root.upper, ...comps);
      const [opaque] = this.knownOpacity ? await areOpaque([upperDir], this.signal) : [true];
      if (!opaque) {
        return {
          names: (await readdir(upperDir)).sort(byUtf8),
          inLower: async (name) => (await this.view.lookup([...comps, name])) !== null,
          lowerNames: listLower,
        };
      }
    }
    const mergedNames = await readdir(join(this.root.merged, ...comps));
    const lowerNames = await listLower();
    const lowerSet = new Set(lowerNames);
    return {
      names: [...new Set([...mergedNames, ...lowerNames])].sort(byUtf8),
      inLower: async (name) => lowerSet.has(name),
      lowerNames: async () => lowerNames,
    };
  }

  private async inUpper(comps: readonly string[]): Promise<boolean> {
    if (!this.overlay) return true;
    return (await lstatOrNull(join(this.root.upper, ...comps))) !== null;
  }

  private async full(comps: string[], st: Stats): Promise<Item[]> {
    const out: Item[] = [];
    const host = join(this.root.merged, ...comps);
    // What fullInto walks is shown from the upperdir alone (new, or replacing what was below).
    await this.fullInto({ rel: joinRel(comps), host, read: this.upperReads ? join(this.root.upper, ...comps) : host }, st, out);
    return out;
  }

  /**
   * Everything at and under `at` in the merged tree, appended to `out` (one array
   * for a whole subtree: `push(...subtree)` overflows the call stack past ~120k
   * entries, a large node_modules, and copied every subtree once per level).
   * Synchronous on purpose (as lowerview.ts): a new subtree can hold 100k files, and
   * an lstat through the thread pool costs several times the call itself; only
   * directories (and excluded paths) recurse, other entries are made in the loop,
   * with their paths joined as strings (names from readdir have no "/").
   */
  private async fullInto(at: WalkPath, st: Stats, out: Item[]): Promise<void> {
    this.signal?.throwIfAborted();
    const self = entryFor(at.rel, at.host, st, at.read);
    const start = out.length;
    if (self !== null) out.push(self);
    if (st.isDirectory()) {
      let n = 0;
      // Listed and stat'ed where it is read (the upperdir holds all of it, with the same
      // owners, modes, sizes and times), hardlink keys too (entryFor). A regular file is
      // listed by name, and read later (snapshot-files.ts).
      for (const d of readdirSync(at.read, { withFileTypes: true }).sort(byName)) {
        if ((n++ & 63) === 0) await this.breathe();
        const name = d.name;
        const rel = `${at.rel}/${name}`;
        if (d.isFile() && !this.excluded.has(rel)) {
          const item = pendingItem(rel);
          out.push(item);
          this.files.add(item);
          continue;
        }
        // Past BULK_MIN files, a directory is left whole to the workers (snapshot-trees.ts).
        if (d.isDirectory() && this.files.bulk && !this.excludesAtOrBelow(rel)) {
          out.push((this.trees ??= new DeferredTrees(this.files, this.readBase, this.pack)).defer(rel));
          continue;
        }
        const child = { rel, host: `${at.host}/${name}`, read: `${at.read}/${name}` };
        const cst = lstatOrNullSync(child.read);
        if (cst === null) continue;
        if (cst.isDirectory() || this.excluded.has(child.rel)) await this.fullInto(child, cst, out);
        else {
          const item = entryFor(child.rel, child.host, cst, child.read);
          if (item !== null) out.push(item);
        }
      }
    }
    // As withSelf: an excluded entry is left out, unless it is a directory with something below it.
    if (self !== null && this.excluded.has(at.rel) && (self.entry.type !== "directory" || out.length === start + 1)) out.splice(start, 1);
  }

  /**
   * The walk of a new subtree is synchronous: every few milliseconds it lets the event
   * loop run, so parallel stages' transfers, RUN output and progress are not held up
   * for the whole of a 100k-file tree.
   */
  private async breathe(): Promise<void> {
    if (monotonicMs() - this.sliceStart < SLICE_MS) return;
    await new Promise<void>((r) => setImmediate(r));
    this.sliceStart = monotonicMs();
  }

  private excludesAtOrBelow(rel: string): boolean {
    for (const e of this.excluded) if (e === rel || e.startsWith(`${rel}/`)) return true;
    return false;
  }

  private withSelf(rel: string, self: Item | null, below: Item[]): Item[] {
    if (self === null) return below;
    if (this.excluded.has(rel) && (self.entry.type !== "directory" || below.length === 0)) return below;
    return [self, ...below];
  }
}
