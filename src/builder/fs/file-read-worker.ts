/**
 * The program of file-readers.ts's worker threads, made from the source text of the
 * functions below, of layer-tar.ts's ustarInto and fitsUstar (ustarCode), of
 * tar-entries.ts's byUtf8 (the walk's order) and of xattr-list.ts (readXattrs, the
 * main thread's way of reading xattrs too). Each
 * of these functions uses only its parameters, the others of this module (named
 * directly: a bundler renames a function and its calls alike), node's builtins and
 * koffi through `require`, and numbers written as literals where file-readers.ts
 * names them (Field, FileStatus): nothing else of the main thread exists in a worker.
 */
import { fitsUstar, ustarCode, ustarInto } from "../../oci/layer-tar.js";
import { byUtf8 } from "../../oci/tar-entries.js";
import { readXattrs, xattrBuffers } from "./xattr-list.js";

/** The worker's settings (file-readers.ts fills them in). */
export interface ReaderData {
  koffi: string;
  skip: string[];
  fields: number;
  /** openat's flags for a file (O_NOATIME is tried first, see sysCalls), and for a directory; AT_FDCWD. */
  flags: number;
  noatime: number;
  eperm: number;
  dirFlags: number;
  /** O_NOFOLLOW, for the directories of a subtree (readTree). */
  noFollow: number;
  atFdcwd: number;
  erange: number;
}

/** One batch asked for. */
export interface BatchRequest {
  id: number;
  /** The directory the paths are relative to. */
  base: string;
  /** Root-relative paths, each ended by a NUL: one string is cloned into the worker at a fraction of an array's cost. */
  rels: string;
  inlineMax: number;
  budget: number;
  /** Whether files are packed as tar entries (see file-readers.ts), and with which sourceDateEpoch. */
  pack: boolean;
  epoch: number | null;
  /** A whole subtree: `rels` is one directory's root-relative path (no NUL); see readTree. */
  tree?: boolean;
}

/** One batch answered. */
export interface BatchReply {
  id: number;
  /** Set when the worker could not serve the batch at all (its C library calls did not load). */
  failed?: string;
  meta?: Float64Array;
  content?: ArrayBuffer;
  used?: number;
  xattrs?: [number, string, Uint8Array][];
  /** A subtree's entries (BatchRequest.tree): their root-relative paths, each ended by a NUL, and where each starts. */
  rels?: string;
  starts?: Int32Array;
  count?: number;
}

/** The other modules' functions, as the worker has them (declared in its program, and handed down). */
interface Shared {
  ustarInto: typeof ustarInto;
  fitsUstar: typeof fitsUstar;
  byUtf8: typeof byUtf8;
  readXattrs: typeof readXattrs;
  xattrBuffers: typeof xattrBuffers;
}

/** The C library's calls a worker makes (through koffi): each returns what the call does, or -errno. */
interface Sys {
  openDir(path: string): number;
  openAt(dirfd: number, name: string): number;
  /** A directory, from its parent's descriptor (O_DIRECTORY, O_NOFOLLOW). */
  openDirAt(dirfd: number, name: string): number;
  /** statx of an open file into `buf` (256 bytes, struct statx). */
  statx(fd: number, buf: Buffer): number;
  read(fd: number, buf: Buffer): number;
  close(fd: number): number;
  xattrs(fd: number, index: number, out: [number, string, Uint8Array][]): void;
}

/** What a batch is being read into. */
interface Out {
  meta: Float64Array;
  content: Buffer;
  used: number;
  xattrs: [number, string, Uint8Array][];
  statx: Buffer;
}

/** The source text of the worker's program. */
export function workerSource(): string {
  const own = [readerMain, sysCalls, xattrReader, readBatch, readOne, readFile, readTree, treeDir, treeEntry, dirFields, mtimeMsOf, readAt].map(String).join("\n");
  // Declared once in the worker's scope (not closures made per call: each would be optimized anew).
  const shared = [readXattrs, xattrBuffers, byUtf8].map(String).join("\n");
  const names = `ustarInto: ${ustarInto.name}, fitsUstar: ${fitsUstar.name}, byUtf8: ${byUtf8.name}, readXattrs: ${readXattrs.name}, xattrBuffers: ${xattrBuffers.name}`;
  return `${own}\n${ustarCode()}\n${shared}\n${readerMain.name}({ ${names} });\n`;
}

function readerMain(tar: Shared): void {
  const { parentPort, workerData } = require("node:worker_threads") as typeof import("node:worker_threads");
  const data = workerData as ReaderData;
  const sys = sysCalls(data, tar);
  parentPort!.on("message", (req: BatchRequest) => {
    if (typeof sys === "string") {
      parentPort!.postMessage({ id: req.id, failed: sys });
      return;
    }
    const reply = req.tree === true ? readTree(req, data, sys, tar) : readBatch(req, data, sys, tar);
    const moved = [reply.meta!.buffer as ArrayBuffer, reply.content!];
    if (reply.starts !== undefined) moved.push(reply.starts.buffer as ArrayBuffer);
    parentPort!.postMessage(reply, moved);
  });
}

/**
 * The worker's system calls, straight to the C library: ~25% less time a file than
 * Node's fs calls (which also made a Stats object and two Dates a file), and openat
 * from the file's directory, not a path walk from /. Or why they cannot be made.
 */
function sysCalls(data: ReaderData, shared: Shared): Sys | string {
  try {
    const koffi = require(data.koffi);
    const lib = koffi.load(null);
    const fn = (decl: string) => lib.func(decl);
    const openat = fn("int openat(int dirfd, const char *path, int flags)");
    const statx = fn("int statx(int dirfd, const char *path, int flags, unsigned int mask, void *buf)");
    const read = fn("intptr_t read(int fd, void *buf, size_t count)");
    const close = fn("int close(int fd)");
    const flist = fn("intptr_t flistxattr(int fd, void *list, size_t size)");
    const fget = fn("intptr_t fgetxattr(int fd, const void *name, void *value, size_t size)");
    const r = (v: number) => (v >= 0 ? v : -koffi.errno());
    const list = (fd: number, b: Buffer) => r(flist(fd, b, b.length));
    const get = (fd: number, name: Buffer, b: Buffer) => r(fget(fd, name, b, b.length));
    return {
      openDir: (path) => r(openat(data.atFdcwd, path, data.dirFlags)),
      openDirAt: (dirfd, name) => r(openat(dirfd, name, data.dirFlags | data.noFollow)),
      // O_NOATIME: files a step just wrote have an atime no later than their mtime, so each
      // first read dirtied its inode to move the atime on (relatime), ~1-3 us a file. Only the
      // owner (or CAP_FOWNER) may ask; anyone else's file is opened without it.
      openAt: (dirfd, name) => {
        const fd = r(openat(dirfd, name, data.flags | data.noatime));
        return fd === -data.eperm ? r(openat(dirfd, name, data.flags)) : fd;
      },
      // AT_EMPTY_PATH, STATX_BASIC_STATS.
      statx: (fd, buf) => r(statx(fd, "", 0x1000, 0x7ff, buf)),
      read: (fd, buf) => r(read(fd, buf, buf.length)),
      close: (fd) => r(close(fd)),
      xattrs: xattrReader(data, list, get, shared),
    };
  } catch (e) {
    return String((e as Error)?.message ?? e);
  }
}

/** A reader of an open file's xattrs (readXattrs, by descriptor), each appended to `out` with the file's index. */
function xattrReader(data: ReaderData, list: (fd: number, b: Buffer) => number, get: (fd: number, name: Buffer, b: Buffer) => number, shared: Shared): Sys["xattrs"] {
  const bufs = shared.xattrBuffers();
  return (fd, index, out) => {
    const keep = (name: string, value: Buffer) => void out.push([index, name, Uint8Array.prototype.slice.call(value)]);
    shared.readXattrs((b) => list(fd, b), (nameZ, b) => get(fd, nameZ, b), data.skip, data.erange, bufs, keep);
  };
}

/**
 * One batch: each file opened from its directory (O_NOFOLLOW), its statx, its xattrs,
 * and a small one's content read into the batch's buffer: as a whole tar entry
 * (header, content, padding) when it can be packed (see file-readers.ts), else as it is.
 */
function readBatch(req: BatchRequest, data: ReaderData, sys: Sys, tar: Shared): BatchReply {
  const rels = req.rels.split("\0");
  rels.pop();
  const out: Out = { meta: new Float64Array(rels.length * data.fields), content: Buffer.allocUnsafeSlow(1 << 20), used: 0, xattrs: [], statx: Buffer.alloc(256) };
  const dir = { rel: "", fd: -1 };
  try {
    for (let i = 0; i < rels.length; i++) {
      const rel = rels[i]!;
      const slash = rel.lastIndexOf("/");
      const dirRel = slash < 0 ? "" : rel.slice(0, slash);
      if (dir.fd < 0 || dirRel !== dir.rel) {
        if (dir.fd >= 0) sys.close(dir.fd);
        dir.rel = dirRel;
        dir.fd = sys.openDir(dirRel === "" ? req.base : `${req.base}/${dirRel}`);
      }
      // A directory that cannot be opened leaves its files to the main thread (Field.STATUS = FileStatus.FALLBACK).
      if (dir.fd >= 0) readAt(req, data, sys, tar, out, i, rel, dir.fd, rel.slice(slash + 1));
    }
  } finally {
    if (dir.fd >= 0) sys.close(dir.fd);
  }
  return { id: req.id, meta: out.meta, content: out.content.buffer as ArrayBuffer, used: out.used, xattrs: out.xattrs };
}

/** What a subtree is read into: Out, and the entries' paths. */
interface TreeOut extends Out {
  rels: string;
  starts: number[];
  count: number;
}

/**
 * A whole new subtree, in the walk's order (a directory, then its entries by name in
 * UTF-8 byte order, each directory's own entries right after it): every directory's and
 * regular file's stat fields and xattrs, and the files read and packed as readBatch
 * does. Field.STATUS is 4 for a directory read whole, 5 for anything else (a symlink, a
 * device, a fifo, an entry whose type readdir did not say): those the main thread
 * makes. A directory or file that cannot be read here is left 0 (FileStatus.FALLBACK),
 * a directory without its entries: the main thread reads it all.
 */
function readTree(req: BatchRequest, data: ReaderData, sys: Sys, tar: Shared): BatchReply {
  const out: TreeOut = { meta: new Float64Array(256 * data.fields), content: Buffer.allocUnsafeSlow(1 << 20), used: 0, xattrs: [], statx: Buffer.alloc(256), rels: "", starts: [], count: 0 };
  const slash = req.rels.lastIndexOf("/");
  const parent = sys.openDir(slash < 0 ? req.base : `${req.base}/${req.rels.slice(0, slash)}`);
  if (parent >= 0) {
    try {
      treeDir(req, data, sys, tar, out, parent, req.rels, req.rels.slice(slash + 1));
    } finally {
      sys.close(parent);
    }
  } else treeEntry(out, data, req.rels);
  const meta = out.meta.slice(0, out.count * data.fields);
  return { id: req.id, meta, content: out.content.buffer as ArrayBuffer, used: out.used, xattrs: out.xattrs, rels: out.rels, starts: Int32Array.from(out.starts), count: out.count };
}

/** Directory `rel` (`name` in the directory open at `parent`) and all below it, into `out`. */
function treeDir(req: BatchRequest, data: ReaderData, sys: Sys, tar: Shared, out: TreeOut, parent: number, rel: string, name: string): void {
  const i = treeEntry(out, data, rel);
  const fd = sys.openDirAt(parent, name);
  if (fd < 0) return;
  try {
    const fs = require("node:fs") as typeof import("node:fs");
    let names: import("node:fs").Dirent[];
    try {
      if (!dirFields(sys, out, data, i, fd)) return;
      // Listed by path, as the walk lists (its names and types, the same library call).
      names = fs.readdirSync(`${req.base}/${rel}`, { withFileTypes: true }).sort((a, b) => tar.byUtf8(a.name, b.name));
    } catch {
      out.meta[i * data.fields] = 0;
      return;
    }
    sys.xattrs(fd, i, out.xattrs);
    for (const d of names) {
      const crel = `${rel}/${d.name}`;
      if (d.isDirectory()) {
        treeDir(req, data, sys, tar, out, fd, crel, d.name);
        continue;
      }
      const k = treeEntry(out, data, crel);
      if (!d.isFile()) {
        out.meta[k * data.fields] = 5;
        continue;
      }
      readAt(req, data, sys, tar, out, k, crel, fd, d.name);
    }
  } finally {
    sys.close(fd);
  }
}

/** A new entry of the subtree at `rel` (FileStatus.FALLBACK until read): its index. */
function treeEntry(out: TreeOut, data: ReaderData, rel: string): number {
  const i = out.count++;
  if (out.count * data.fields > out.meta.length) {
    const bigger = new Float64Array(out.meta.length * 2);
    bigger.set(out.meta);
    out.meta = bigger;
  }
  out.starts.push(out.rels.length);
  out.rels += `${rel}\0`;
  return i;
}

/** A directory's stat fields (Field.MODE, UID, GID, MTIME_MS as readOne's) at `i`, Field.STATUS 4; false when it is not one. */
function dirFields(sys: Sys, out: Out, data: ReaderData, i: number, fd: number): boolean {
  const x = out.statx;
  if (sys.statx(fd, x) < 0 || (x.readUInt32LE(0) & 0x7ff) !== 0x7ff || (x.readUInt16LE(28) & 0o170000) !== 0o040000) return false;
  const o = i * data.fields;
  out.meta[o + 1] = x.readUInt16LE(28);
  out.meta[o + 2] = x.readUInt32LE(20);
  out.meta[o + 3] = x.readUInt32LE(24);
  out.meta[o + 5] = mtimeMsOf(x);
  out.meta[o] = 4;
  return true;
}

/** File `i` (`rel`, `name` in the directory open at `dirfd`) opened, read by readOne and closed; left FALLBACK when it cannot be opened. */
function readAt(req: BatchRequest, data: ReaderData, sys: Sys, tar: Shared, out: Out, i: number, rel: string, dirfd: number, name: string): void {
  const fd = sys.openAt(dirfd, name);
  if (fd < 0) return;
  try {
    readOne(req, data, sys, tar, out, i, rel, fd);
  } finally {
    sys.close(fd);
  }
}

/** A struct statx's mtime as Node's Stats.mtime gives it: to the millisecond, rounded as Node rounds. */
function mtimeMsOf(x: Buffer): number {
  return Math.round((x.readInt32LE(116) * 2 ** 32 + x.readUInt32LE(112)) * 1000 + x.readUInt32LE(120) / 1e6);
}

/** File `i` of the batch, open at `fd`, into `out` (its fields, xattrs and content; left FALLBACK when anything is off). */
function readOne(req: BatchRequest, data: ReaderData, sys: Sys, tar: Shared, out: Out, i: number, rel: string, fd: number): void {
  const x = out.statx;
  // struct statx: the basic fields asked for are there, and it is a regular file.
  if (sys.statx(fd, x) < 0 || (x.readUInt32LE(0) & 0x7ff) !== 0x7ff || (x.readUInt16LE(28) & 0o170000) !== 0o100000) return;
  const mark = out.xattrs.length;
  sys.xattrs(fd, i, out.xattrs);
  const nlink = x.readUInt32LE(16);
  const uid = x.readUInt32LE(20);
  const gid = x.readUInt32LE(24);
  const mode = x.readUInt16LE(28);
  // 64-bit fields as two halves (no BigInt a file).
  const size = x.readUInt32LE(44) * 2 ** 32 + x.readUInt32LE(40);
  const mtimeMs = mtimeMsOf(x);
  const o = i * data.fields;
  const meta = out.meta;
  // Field.MODE, UID, GID, SIZE, MTIME_MS, NLINK; DEV and INO as Node's fstat gives them, for a file with other links.
  meta[o + 1] = mode;
  meta[o + 2] = uid;
  meta[o + 3] = gid;
  meta[o + 4] = size;
  meta[o + 5] = mtimeMs;
  meta[o + 6] = nlink;
  if (nlink > 1) {
    const st = (require("node:fs") as typeof import("node:fs")).fstatSync(fd);
    meta[o + 7] = st.dev;
    meta[o + 8] = st.ino;
  }
  // Field.STATUS = FileStatus.STAT: the tar reads its content.
  meta[o] = 1;
  if (size > req.inlineMax || out.used + size > req.budget) return;
  let mtime = Math.floor(mtimeMs / 1000);
  if (req.epoch !== null && mtime > req.epoch) mtime = req.epoch;
  // Packed: one link, no xattrs, a header with no PAX record (the main thread makes the rest).
  const pack = req.pack && nlink === 1 && out.xattrs.length === mark && tar.fitsUstar(rel, uid, gid, size, mtime);
  const at = out.used;
  const header = pack ? 512 : 0;
  const end = at + header + (pack ? Math.ceil(size / 512) * 512 : size);
  if (!readFile(sys, fd, out, at + header, size, end)) {
    meta[o] = 0;
    out.xattrs.length = mark;
    return;
  }
  if (pack) {
    // What headerParts makes of such a file's entry.
    const fields = { name: rel, mode: mode & 0o7777, uid, gid, size, mtime, typeflag: "0", linkname: "", uname: "", gname: "", devmajor: 0, devminor: 0 };
    tar.ustarInto(fields, out.content, at);
  }
  // Field.CONTENT_AT; Field.STATUS = FileStatus.PACKED or INLINE.
  meta[o + 9] = at;
  meta[o] = pack ? 3 : 2;
  out.used = end;
}

/**
 * The `size` bytes of the file open at `fd`, read to `from` in `out.content` (grown to
 * hold up to `end`, with zeros from `out.used` to `end` around them). One byte more is
 * asked for: false when the file is not `size` bytes long now.
 */
function readFile(sys: Sys, fd: number, out: Out, from: number, size: number, end: number): boolean {
  if (end + 1 > out.content.length) {
    const bigger = Buffer.allocUnsafeSlow(Math.max(end + 1, out.content.length * 2));
    out.content.copy(bigger, 0, 0, out.used);
    out.content = bigger;
  }
  out.content.fill(0, out.used, end + 1);
  let got = 0;
  for (;;) {
    const r = sys.read(fd, out.content.subarray(from + got, from + size + 1));
    if (r < 0) return false;
    got += r;
    // A short read of a regular file is its end (as layer-pack.ts readSmall): one read a file.
    if (r === 0 || got >= size) break;
  }
  return got === size;
}
