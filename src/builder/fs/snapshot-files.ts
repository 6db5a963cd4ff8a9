/**
 * The regular files of a snapshot's new subtrees, listed by name in the walk
 * (snapshot.ts fullInto: readdir's file type says "regular file") and made into
 * entries afterwards: on the main thread (lstat, then xattrs in one batch) when there
 * are few, or, past BULK_MIN files, by worker threads (file-readers.ts) that read
 * each file's stat fields, xattrs and small content ahead of the tar: they start while
 * the walk goes on, and read its first files on the core the walk leaves free. Either
 * way an entry is what entryFor makes of the file, with the same xattrs: only where the
 * system calls are made differs. When the snapshot feeds a layer writer (its `pack`
 * option), the workers also write the plainest files (one link, no xattrs, a header
 * without PAX records) as whole tar entries, and those come out as TarSegments: the
 * bytes the writer would have made of their entries. Past BULK_MIN files the walk also
 * leaves whole directories to the workers (snapshot-trees.ts).
 */
import type { LayerEntry, TarSegment } from "../../oci/layer.js";
import { OcibuildError } from "../../errors.js";
import { Field, FileStatus, fieldOf, type FileBatch, type FileReaders } from "./file-readers.js";
import { getXattrs, startFileReaders } from "./native.js";
import { entryFor, fileEntry, type Item } from "./snapshot-compare.js";
import { lstatOrNullSync } from "./util.js";

/** A regular file of a new subtree, not yet read: root-relative (read at PendingFiles' base/rel). */
export interface PendingFile {
  rel: string;
  /** Its place among the snapshot's pending files, in the walk's order (set by PendingFiles.add). */
  index: number;
}

/** What PendingFiles.take made of an item. */
export const Taken = {
  /** Not in the layer (a file found gone). */
  NONE: 0,
  /** In the layer as its entry (item.entry). */
  ENTRY: 1,
  /** In the layer as tar bytes a worker packed (PendingFiles.packed). */
  PACKED: 2,
} as const;
export type Taken = (typeof Taken)[keyof typeof Taken];

/** Files below this are made into entries on the main thread: starting workers costs more than it saves. */
const BULK_MIN = 2000;
/** Files a worker reads per batch (one message each way). */
const BATCH = 1024;
/** Batches asked for ahead of the one the tar is at. */
const AHEAD = 4;
/** Batches asked for while the walk goes on (its one core leaves the other to the workers). */
const EARLY = 16;

/** The entry of every pending item until its own is made: nothing reads it. */
const PLACEHOLDER: LayerEntry = Object.freeze({ path: "", type: "file", mode: 0, uid: 0, gid: 0, mtime: new Date(0) });

/** The item of a file listed by name (its entry is made once it is read). */
export function pendingItem(rel: string): Item {
  return { entry: PLACEHOLDER, pending: { rel, index: -1 } };
}

/**
 * `item`'s entry made on the main thread from `read` (its file), as the walk would have
 * made it: false when the file is gone (it is then left out). A file that became a
 * directory since it was listed is SNAPSHOT_FAILED (nothing runs in the root while it
 * is read). All of it is read at `read` (a symlink's target too): nothing more is read
 * in the merged tree.
 */
function resolveOnMain(item: Item, rel: string, read: string): boolean {
  const st = lstatOrNullSync(read);
  if (st === null) return false;
  if (st.isDirectory()) {
    throw new OcibuildError("SNAPSHOT_FAILED", `"${rel}" changed from a file to a directory while the step's change was being read`);
  }
  const made = entryFor(rel, read, st);
  if (made === null) return false;
  item.entry = made.entry;
  item.inode = made.inode;
  item.hostPath = made.hostPath;
  item.pending = undefined;
  return true;
}

/**
 * The item of the file at `i` of batch `b` (`rel`, read at `read`), which a worker read
 * (STAT or INLINE): `item` (a pending one) made into it, or a new one.
 */
export function batchItem(rel: string, read: string, b: FileBatch, i: number, item: Item = { entry: PLACEHOLDER }): Item {
  const f = (field: number) => fieldOf(b, i, field);
  const entry: LayerEntry = fileEntry(rel, read, { mode: f(Field.MODE), uid: f(Field.UID), gid: f(Field.GID), mtime: new Date(f(Field.MTIME_MS)), size: f(Field.SIZE) });
  if (f(Field.STATUS) === FileStatus.INLINE) {
    entry.content = b.content;
    entry.contentAt = f(Field.CONTENT_AT);
  }
  const x = b.xattrs.get(i);
  if (x !== undefined) entry.xattrs = x;
  item.entry = entry;
  item.hostPath = read;
  // Keyed where it is read, as entryFor.
  if (f(Field.NLINK) > 1) item.inode = `${f(Field.DEV)}:${f(Field.INO)}`;
  item.pending = undefined;
  return item;
}

/** The pending files of a snapshot, made into entries in order (see the module comment). */
export class PendingFiles {
  /** Every pending file, numbered in the walk's order (asked-for ones let go). */
  private readonly files: (PendingFile | undefined)[] = [];
  private readers: FileReaders | undefined;
  /** The workers starting (past BULK_MIN files), while the walk goes on. */
  private starting: Promise<void> | undefined;
  private walked = false;
  private closed = false;
  /** Batches asked for, by number (released ones undefined). */
  private readonly batches: (Promise<void> | undefined)[] = [];
  /** Batches answered, by number: undefined when the workers could not read it. */
  private readonly ready = new Map<number, FileBatch | undefined>();
  /** Files of each batch not taken yet: a batch (its buffer) is let go once all are. */
  private readonly left: number[] = [];
  /** The last item taken as PACKED: its tar entry is `length` bytes of `tar` from `at`, `size` of them content. */
  readonly packed: { tar: Buffer; at: number; length: number; size: number } = { tar: Buffer.alloc(0), at: 0, length: 0, size: 0 };

  /**
   * Whether the walk has listed BULK_MIN files, for workers to read: from then on it
   * leaves whole subtrees to them (snapshot-trees.ts).
   */
  get bulk(): boolean {
    return this.starting !== undefined;
  }

  /** The workers, once started (undefined: none, or not asked for). */
  async readersReady(): Promise<FileReaders | undefined> {
    await this.starting;
    return this.readers;
  }

  /** The workers if they are up. */
  readersNow(): FileReaders | undefined {
    return this.readers;
  }

  /** Files read at `base`/rel. */
  constructor(
    private readonly base: string,
    private readonly opts: PendingOptions,
  ) {}

  /**
   * A file the walk listed by name. Past BULK_MIN files, workers start, and read the
   * first EARLY batches while the walk goes on (the walk's order is the layer's: a
   * directory's names are visited in byte order, and nothing the walk lists by name is
   * reordered after).
   */
  add(item: Item): void {
    const p = item.pending!;
    p.index = this.files.length;
    this.files.push(p);
    if (this.files.length === BULK_MIN && this.opts.workers !== false) {
      this.starting = startFileReaders()
        .catch(() => undefined)
        .then((r) => {
          if (this.closed) r?.close();
          else this.readers = r;
          if (this.readers !== undefined) this.ask(EARLY - 1);
        });
    } else if (this.readers !== undefined && this.files.length % BATCH === 0) {
      this.ask(EARLY - 1);
    }
  }

  /**
   * The walk is over. Without workers (few files, one core, no koffi), each pending file
   * among `items` is made into its entry now (a file found gone marked `dropped`), for
   * the caller's one batch of xattrs.
   */
  async walkDone(items: Item[]): Promise<void> {
    this.walked = true;
    await this.starting;
    if (this.readers !== undefined) return;
    for (const item of items) if (item.pending !== undefined && !resolveOnMain(item, item.pending.rel, `${this.base}/${item.pending.rel}`)) item.dropped = true;
  }

  /**
   * What becomes of `item` (pending or not), its entry made if it was pending. Items
   * are taken in the layer's order. A promise only when the item's batch is not answered
   * yet (or it is read here after all): most are taken without an await.
   */
  take(item: Item): Taken | Promise<Taken> {
    if (item.dropped === true) return Taken.NONE;
    const p = item.pending;
    if (p === undefined) return Taken.ENTRY;
    const k = Math.floor(p.index / BATCH);
    this.ask(k + AHEAD);
    if (!this.ready.has(k)) return this.batches[k]!.then(() => this.take(item));
    const b = this.ready.get(k);
    if (--this.left[k]! === 0) {
      this.batches[k] = undefined;
      this.ready.delete(k);
    }
    const i = p.index % BATCH;
    const status = b === undefined ? FileStatus.FALLBACK : fieldOf(b, i, Field.STATUS);
    if (status === FileStatus.PACKED) {
      this.setPacked(b!, i);
      item.pending = undefined;
      return Taken.PACKED;
    }
    if (status !== FileStatus.FALLBACK) {
      batchItem(p.rel, `${this.base}/${p.rel}`, b!, i, item);
      return Taken.ENTRY;
    }
    return this.readHere(item, p);
  }

  /** `packed` made the tar entry the worker packed for the file at `i` of `b` (FileStatus.PACKED). */
  setPacked(b: FileBatch, i: number): void {
    const size = fieldOf(b, i, Field.SIZE);
    const packed = this.packed;
    packed.tar = b.content;
    packed.at = fieldOf(b, i, Field.CONTENT_AT);
    packed.length = 512 + Math.ceil(size / 512) * 512;
    packed.size = size;
  }

  /** A file the workers did not read: made on this thread, xattrs too. */
  private async readHere(item: Item, p: PendingFile): Promise<Taken> {
    if (!resolveOnMain(item, p.rel, `${this.base}/${p.rel}`)) return Taken.NONE;
    const x = (await getXattrs([item.hostPath!], this.opts.signal)).get(item.hostPath!);
    if (x !== undefined) item.entry.xattrs = x;
    return Taken.ENTRY;
  }

  close(): void {
    this.closed = true;
    this.readers?.close();
  }

  /** Batches up to `k` asked for: whole ones while the walk goes on. */
  private ask(k: number): void {
    const readers = this.readers!;
    for (let from = this.batches.length * BATCH; this.batches.length <= k && from < this.files.length; from += BATCH) {
      const to = Math.min(from + BATCH, this.files.length);
      if (to - from < BATCH && !this.walked) return;
      let rels = "";
      for (let i = from; i < to; i++) {
        rels += `${this.files[i]!.rel}\0`;
        // Asked for: its item holds it until taken (see snapshotBatches).
        this.files[i] = undefined;
      }
      const n = this.batches.length;
      this.left.push(to - from);
      this.batches.push(readers.read(this.base, rels, this.opts.pack).then((b) => void this.ready.set(n, b)));
    }
  }
}

export interface PendingOptions {
  signal?: AbortSignal;
  /** Files may be packed as tar entries, with the layer writer's sourceDateEpoch (see the module comment). */
  pack?: { epoch: number | undefined };
  /** False: no workers, however many files. */
  workers?: boolean;
}

/**
 * Adds the item PendingFiles.take just gave as PACKED to `out`: to the tar segment that
 * ends `out` when its bytes follow that segment's, else as a new one (returned).
 */
export function addPacked(out: (LayerEntry | TarSegment)[], last: TarSegment | undefined, p: PendingFiles["packed"], epoch: number | undefined): TarSegment {
  if (last !== undefined && out[out.length - 1] === last && last.tar === p.tar && last.at + last.length === p.at) {
    last.length += p.length;
    last.entries++;
    last.contentBytes += p.size;
    return last;
  }
  const seg: TarSegment = { tar: p.tar, at: p.at, length: p.length, entries: 1, contentBytes: p.size, sourceDateEpoch: epoch };
  out.push(seg);
  return seg;
}

/** The entry of `item`, or a hardlink to the first path of its inode. */
export function entryOf(item: Item, firstLink: Map<string, string>): LayerEntry {
  const first = item.inode === undefined ? undefined : firstLink.get(item.inode);
  if (first !== undefined) {
    const { path, mode, uid, gid, mtime } = item.entry;
    return { path, type: "hardlink", mode, uid, gid, mtime, linkname: first };
  }
  if (item.inode !== undefined) firstLink.set(item.inode, item.entry.path);
  return item.entry;
}

/** Entries the tar has written: a worker's buffer of contents is freed once its last file is. */
export function written(entries: (LayerEntry | TarSegment)[]): void {
  for (const e of entries) if ("content" in e && e.content !== undefined) e.content = undefined;
}
