/**
 * The subtrees of a large new tree, read whole by the file readers' workers. Once a
 * snapshot's walk has listed BULK_MIN files by name (snapshot-files.ts), each
 * directory it meets further on in a new subtree (with no excluded path at or below it)
 * is not walked on the main thread but left as one item: a worker lists it, stats and
 * reads (and packs) what is in it, and answers with all of its entries in the walk's
 * order (FileReaders.readTree). The main thread makes no object, string or system call
 * for a packed file; walking them there had cost ~3 us a file (readdir's Dirents, the
 * items, their collection): ~0.3 s of a step that wrote 100,000 files, before its
 * layer's tar could start. The entries are those the walk would have made: the same
 * order, fields, xattrs and hardlinks; what a worker does not read (a symlink, a
 * device, a file or directory it could not open) is made here as the walk makes it.
 */
import { readdirSync, type Stats } from "node:fs";
import { OcibuildError } from "../../errors.js";
import type { LayerEntry } from "../../oci/layer.js";
import { byUtf8 } from "../../oci/tar-entries.js";
import { Field, FileStatus, fieldOf, type TreeBatch } from "./file-readers.js";
import { attachXattrs, entryFor, type Item } from "./snapshot-compare.js";
import { batchItem, type PendingFiles } from "./snapshot-files.js";
import { lstatOrNullSync } from "./util.js";

/** A subtree left to the workers: root-relative, read at `read`. */
export interface DeferredTree {
  rel: string;
  read: string;
  /** Its answer, once asked for. */
  reply?: Promise<TreeBatch | undefined>;
}

/** Subtrees asked for and not yet all taken, at most: each answer holds at most ~4 MiB of content. */
const TREES_AHEAD = 8;

/** The entry of a deferred item until its subtree is read: nothing reads it. */
const PLACEHOLDER: LayerEntry = Object.freeze({ path: "", type: "directory", mode: 0, uid: 0, gid: 0, mtime: new Date(0) });

/** What TreeCursor.next gives. */
export const Step = {
  /** The subtree is done. */
  END: 0,
  /** A packed file: PendingFiles.packed. */
  PACKED: 1,
  /** An entry: TreeCursor.item. */
  ITEM: 2,
  /** Nothing (an entry found gone, or a socket). */
  NONE: 3,
} as const;
export type Step = (typeof Step)[keyof typeof Step];

/** The subtrees of one snapshot, asked for in the walk's order, TREES_AHEAD at a time. */
export class DeferredTrees {
  private readonly trees: DeferredTree[] = [];
  private asked = 0;
  /** Asked for and not yet taken to their end. */
  private open = 0;

  constructor(
    private readonly files: PendingFiles,
    private readonly base: string,
    private readonly pack: { epoch: number | undefined } | undefined,
  ) {
    // The workers are starting (the walk has just listed BULK_MIN files): ask once they are up.
    void files.readersReady().then(() => this.ask());
  }

  /** A subtree the walk leaves to the workers: its item (in the walk's order). */
  defer(rel: string): Item {
    const tree: DeferredTree = { rel, read: `${this.base}/${rel}` };
    this.trees.push(tree);
    this.ask();
    return { entry: PLACEHOLDER, tree };
  }

  /** The entries of `tree`, once read (or, when the workers could not, read here). */
  async take(tree: DeferredTree): Promise<TreeCursor> {
    await this.files.readersReady();
    this.ask();
    const reply = await tree.reply;
    tree.reply = undefined;
    return new TreeCursor(tree, reply, this.files, this.base, () => {
      this.open--;
      this.ask();
    });
  }

  /** Ask for the next subtrees, up to TREES_AHEAD not yet taken to their end. */
  private ask(): void {
    const readers = this.files.readersNow();
    if (readers === undefined) return;
    while (this.open < TREES_AHEAD && this.asked < this.trees.length) {
      const t = this.trees[this.asked++]!;
      this.open++;
      t.reply = readers.readTree(this.base, t.rel, this.pack);
    }
  }
}

/** The entries of one subtree, one at a time, in the walk's order. */
export class TreeCursor {
  /** The entry of the last Step.ITEM. */
  item: Item | undefined;
  private i = 0;
  /** Entries made here (a part of the subtree the worker did not read), given before the rest from `madeAt`. */
  private made: Item[] = [];
  private madeAt = 0;
  /** Without an answer: whether the subtree was walked here yet. */
  private walked = false;

  constructor(
    private readonly tree: DeferredTree,
    private readonly b: TreeBatch | undefined,
    private readonly files: PendingFiles,
    private readonly base: string,
    private readonly done: () => void,
  ) {}

  next(): Step | Promise<Step> {
    if (this.madeAt < this.made.length) return this.give(this.made[this.madeAt++]!);
    const b = this.b;
    if (b === undefined && !this.walked) {
      // Not read by a worker at all: the whole subtree, here.
      this.walked = true;
      return this.walkHere(this.tree.rel, this.tree.read);
    }
    if (b === undefined || this.i >= b.count) {
      this.done();
      return Step.END;
    }
    const i = this.i++;
    const status = fieldOf(b, i, Field.STATUS);
    if (status === FileStatus.PACKED) {
      this.files.setPacked(b, i);
      return Step.PACKED;
    }
    const rel = b.rels.slice(b.starts[i], (i + 1 < b.count ? b.starts[i + 1]! : b.rels.length) - 1);
    const read = `${this.base}/${rel}`;
    if (status === FileStatus.STAT || status === FileStatus.INLINE) return this.give(batchItem(rel, read, b, i));
    if (status === FileStatus.DIR) {
      const x = b.xattrs.get(i);
      const entry: LayerEntry = { path: rel, type: "directory", mode: fieldOf(b, i, Field.MODE) & 0o7777, uid: fieldOf(b, i, Field.UID), gid: fieldOf(b, i, Field.GID), mtime: new Date(fieldOf(b, i, Field.MTIME_MS)) };
      if (x !== undefined) entry.xattrs = x;
      return this.give({ entry, hostPath: read });
    }
    // Not read by the worker (a symlink, a device; an entry it could not open, with what is
    // below it when a directory: the worker gave none of those): here.
    return this.walkHere(rel, read);
  }

  private give(item: Item): Step {
    this.item = item;
    return Step.ITEM;
  }

  /** The entries at and below `rel` made here, as the walk makes them (xattrs in one batch), the first given now. */
  private async walkHere(rel: string, read: string): Promise<Step> {
    const items: Item[] = [];
    try {
      const st = lstatOrNullSync(read);
      if (st !== null) walk(rel, read, st, items);
    } catch (e) {
      throw new OcibuildError("SNAPSHOT_FAILED", `cannot read "${rel}" of the step's change: ${(e as Error).message}`, { cause: e });
    }
    await attachXattrs(items);
    this.made = items;
    this.madeAt = 0;
    return items.length > 0 ? this.give(items[this.madeAt++]!) : Step.NONE;
  }
}

/** Everything at and under `rel` (read at `read`, stats `st`), as snapshot.ts fullInto makes it with nothing excluded. */
function walk(rel: string, read: string, st: Stats, out: Item[]): void {
  const self = entryFor(rel, read, st, read);
  if (self !== null) out.push(self);
  if (!st.isDirectory()) return;
  for (const d of readdirSync(read, { withFileTypes: true }).sort((a, b) => byUtf8(a.name, b.name))) {
    const cst = lstatOrNullSync(`${read}/${d.name}`);
    if (cst !== null) walk(`${rel}/${d.name}`, `${read}/${d.name}`, cst, out);
  }
}
