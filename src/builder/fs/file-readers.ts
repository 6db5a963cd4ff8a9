/**
 * The files of a large new subtree (an `npm install`, a RUN writing 100,000 files),
 * read on worker threads. On the main thread each small file cost five system calls
 * through Node's bindings (lstat and llistxattr in the walk, open, read and close in
 * the tar): ~10 us a file, 1-1.3 s of a snapshot of 100,000 files, one core, where
 * `tar -c | gzip -1` runs its calls on one core and gzip on the other. Here each file
 * is opened once, from its directory (openat, O_NOFOLLOW, O_NOATIME where allowed), and
 * statx, flistxattr/fgetxattr, read and close are made on the open descriptor, straight
 * to the C library through koffi, on as many workers as there are cores (up to four),
 * ahead of the tar. The plainest files are packed there as whole tar entries; the main
 * thread makes entries of the rest and copies bytes.
 *
 * A batch's answer is its files' stat fields, their xattrs (overlayfs' own and SELinux
 * labels left out, as getXattrs does) and the content of its small files in one buffer.
 * A subtree's (readTree, snapshot-trees.ts) is the same for every directory and regular
 * file below a directory, which the worker lists itself, in the walk's order.
 * A file a worker cannot serve this way (not a regular file any more, an open or read
 * that fails, a size that changed under the read) is marked FALLBACK and read the usual
 * way on the main thread, which then reports what is wrong as it always did. A worker
 * that fails, or exits, fails its batches the same way, and is given no more: nothing
 * depends on a worker for correctness, only for speed.
 */
import { constants as fsc } from "node:fs";
import { availableParallelism, constants as osc } from "node:os";
import type { Worker } from "node:worker_threads";
import { workerThreads } from "../../builtins.js";
import { workerSource, type BatchReply, type BatchRequest, type ReaderData } from "./file-read-worker.js";

/** What the worker says about one file (its Field.STATUS). */
export const FileStatus = {
  /** Read the usual way on the main thread. */
  FALLBACK: 0,
  /** Stat fields and xattrs; the content is read later by the tar (a large file, or the batch's content budget spent). */
  STAT: 1,
  /** Stat fields, xattrs and content (in FileBatch.content at Field.CONTENT_AT). */
  INLINE: 2,
  /**
   * Stat fields, and the file as a whole tar entry (header, content, padding) in
   * FileBatch.content at Field.CONTENT_AT: a file with one link, no xattrs and a header
   * without PAX records (layer-tar.ts fitsUstar), when the batch was asked to pack.
   */
  PACKED: 3,
  /** A subtree's directory (FileReaders.readTree): its stat fields and xattrs, its entries after it. */
  DIR: 4,
  /** A subtree's entry that is neither a regular file nor a directory: made on the main thread. */
  OTHER: 5,
} as const;

/** Offsets in a file's FIELDS numbers of FileBatch.meta (the worker writes them as literals). */
export const Field = {
  STATUS: 0,
  MODE: 1,
  UID: 2,
  GID: 3,
  SIZE: 4,
  /** The mtime as Node's Stats.mtime gives it (whole milliseconds). */
  MTIME_MS: 5,
  NLINK: 6,
  DEV: 7,
  INO: 8,
  CONTENT_AT: 9,
} as const;
const FIELDS = 10;

/** One batch's answer. */
export interface FileBatch {
  /** FIELDS numbers a file, in the order of the paths asked for (see Field). */
  meta: Float64Array;
  /** The INLINE files' bytes and the PACKED files' tar entries, in the order of the files. */
  content: Buffer;
  /** xattrs by the file's index in the batch (files without any are absent). */
  xattrs: Map<number, Record<string, Buffer>>;
}

/** A subtree's answer (FileReaders.readTree): a FileBatch of all its entries, in the walk's order. */
export interface TreeBatch extends FileBatch {
  count: number;
  /** Root-relative paths, each ended by a NUL; the entry at index i starts at starts[i]. */
  rels: string;
  starts: Int32Array;
}

/** Files at most this large are read by the worker; larger ones are streamed by the tar as before. */
const INLINE_MAX = 256 * 1024;
/** Content bytes a batch reads at most (the rest of its files are STAT). */
const BATCH_CONTENT = 4 * 1024 * 1024;

interface Waiting {
  resolve(b: FileBatch | undefined): void;
  worker: Worker;
}

/** Worker threads reading files in batches (see the module comment). */
export class FileReaders {
  private readonly waiting = new Map<number, Waiting>();
  /** Workers that failed or exited. */
  private readonly dead = new Set<Worker>();
  private nextId = 0;
  private turn = 0;
  private closed = false;

  /**
   * Workers for this process's cores (none on one core, where they would only take
   * turns with the main thread), or undefined. `koffiPath` is the file the main
   * thread loaded koffi from; `skip`, the xattr namespaces left out.
   */
  static start(koffiPath: string, skip: readonly string[]): FileReaders | undefined {
    const count = Math.min(availableParallelism(), 4);
    if (count < 2) return undefined;
    const workerData: ReaderData = {
      koffi: koffiPath,
      skip: [...skip],
      fields: FIELDS,
      // O_CLOEXEC (not in Node's constants): 0o2000000 on Linux.
      flags: fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | 0o2000000,
      noatime: fsc.O_NOATIME ?? 0,
      eperm: osc.errno.EPERM,
      dirFlags: fsc.O_RDONLY | fsc.O_DIRECTORY | 0o2000000,
      noFollow: fsc.O_NOFOLLOW,
      atFdcwd: -100,
      erange: osc.errno.ERANGE,
    };
    const source = workerSource();
    const workers: Worker[] = [];
    const { Worker: WorkerClass } = workerThreads();
    for (let i = 0; i < count; i++) workers.push(new WorkerClass(source, { eval: true, workerData }));
    return new FileReaders(workers);
  }

  private constructor(private readonly workers: Worker[]) {
    for (const w of workers) {
      w.unref();
      w.on("message", (m: BatchReply) => this.reply(m));
      // A worker that fails or exits fails its batches: their files are read on the main thread.
      w.on("error", () => this.drop(w));
      w.on("exit", () => this.drop(w));
    }
  }

  /**
   * Stat fields, xattrs and small contents of the files at `rels` (each ended by a NUL)
   * under `base`, packed as tar entries where they can be when `pack` is given (with the
   * layer's sourceDateEpoch); undefined when the batch could not be read here.
   */
  read(base: string, rels: string, pack: { epoch: number | undefined } | undefined): Promise<FileBatch | undefined> {
    return this.ask(base, rels, pack, false);
  }

  /**
   * The whole subtree at `rel` under `base` (a directory), in the walk's order: each
   * directory's and regular file's stat fields and xattrs, small files read (and packed)
   * as `read` does them (see FileStatus.DIR and OTHER); undefined when it could not be read here.
   */
  readTree(base: string, rel: string, pack: { epoch: number | undefined } | undefined): Promise<TreeBatch | undefined> {
    return this.ask(base, rel, pack, true) as Promise<TreeBatch | undefined>;
  }

  private ask(base: string, rels: string, pack: { epoch: number | undefined } | undefined, tree: boolean): Promise<FileBatch | undefined> {
    const live = this.workers.filter((w) => !this.dead.has(w));
    if (this.closed || live.length === 0) return Promise.resolve(undefined);
    const worker = live[this.turn++ % live.length]!;
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, { resolve, worker });
      const req: BatchRequest = { id, base, rels, inlineMax: INLINE_MAX, budget: BATCH_CONTENT, pack: pack !== undefined, epoch: pack?.epoch ?? null, tree };
      worker.postMessage(req);
    });
  }

  /** Stops the workers; batches not answered yet resolve undefined. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.workers) void w.terminate();
    for (const [id, wait] of this.waiting) {
      this.waiting.delete(id);
      wait.resolve(undefined);
    }
  }

  private reply(m: BatchReply): void {
    const wait = this.waiting.get(m.id);
    if (wait === undefined) return;
    this.waiting.delete(m.id);
    if (m.failed !== undefined || m.meta === undefined) return wait.resolve(undefined);
    const xattrs = new Map<number, Record<string, Buffer>>();
    for (const [i, name, value] of m.xattrs ?? []) {
      let x = xattrs.get(i);
      if (x === undefined) xattrs.set(i, (x = {}));
      x[name] = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    }
    const batch: FileBatch = { meta: m.meta, content: Buffer.from(m.content!, 0, m.used!), xattrs };
    const tree: TreeBatch | undefined = m.rels === undefined ? undefined : { ...batch, rels: m.rels, starts: m.starts!, count: m.count! };
    wait.resolve(tree ?? batch);
  }

  private drop(w: Worker): void {
    this.dead.add(w);
    for (const [id, wait] of this.waiting) {
      if (wait.worker !== w) continue;
      this.waiting.delete(id);
      wait.resolve(undefined);
    }
  }
}

/** Field `field` of the file at `index` of batch `b`. */
export function fieldOf(b: FileBatch, index: number, field: number): number {
  return b.meta[index * FIELDS + field]!;
}
