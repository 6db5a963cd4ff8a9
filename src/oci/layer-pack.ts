/**
 * The tar stream of layer entries as large chunks: headers, small files' content and
 * padding are written straight into one buffer of CHUNK_BYTES, passed on every FLUSH_BYTES.
 * A layer of many small files (node_modules, a RUN writing 100k files) was limited by
 * what each entry cost on the main thread beside the system calls: a buffer per header,
 * per file and per padding, the copies gathering them into chunks, and an async
 * generator step for each. Small files with a sourcePath are read with open, read and
 * close straight into the chunk (no fstat, no buffer of their own), or come already
 * read (LayerEntry.content); the rest stream.
 * Only where the bytes go and how they are cut into chunks differs from writing the
 * pieces one by one: the tar is the same, and gzip members and zstd frames are cut at
 * fixed offsets of it, so the layer's digest is too.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { OcibuildError, isOcibuildError } from "../errors.js";
import type { LayerEntries, LayerEntry, TarSegment } from "./layer.js";
import { BLOCK, encodeHeaderInto, validateEntry } from "./layer-tar.js";

/** Bytes a chunk buffer holds. */
const CHUNK_BYTES = 512 * 1024;
/**
 * What is filled is passed on once it reaches this, the buffer's rest kept for what
 * follows: the compressor (layer-pieces.ts feeds) gets a small layer's bytes while its
 * walk and reads go on, not all at the end, at no cost in buffers.
 */
const FLUSH_BYTES = 128 * 1024;
/** Files up to this size with a sourcePath are read in one call, straight into the chunk. */
export const SMALL_FILE = 256 * 1024;
/** Streamed content in pieces at least this large is passed on as it is, not copied. */
const PASS_THROUGH = 64 * 1024;

function sizeMismatch(e: LayerEntry, what: string): OcibuildError {
  return new OcibuildError("LAYER_SIZE_MISMATCH", `"${e.path}" ${what}`, { hint: "the file changed while the layer was being written" });
}

function readFailed(e: LayerEntry, verb: string, err: unknown): OcibuildError {
  return new OcibuildError("LAYER_CONTENT_READ_FAILED", `cannot ${verb} the content of "${e.path}": ${(err as Error).message}`, { cause: err });
}

/**
 * One output chunk being filled. Its buffer starts zeroed and is written front to back
 * once, so everything from `fill` on is zeros: headers are written into zeros, and
 * padding and the end marker are only skipped over.
 */
class Chunk {
  buf = Buffer.alloc(CHUNK_BYTES);
  fill = 0;

  room(): number {
    return this.buf.length - this.fill;
  }

  /** What is filled, passed on; the next bytes go into a new buffer (the one passed on is not reused). */
  take(): Buffer {
    const out = this.buf.subarray(0, this.fill);
    this.buf = Buffer.alloc(CHUNK_BYTES);
    this.fill = 0;
    return out;
  }

  /** What is filled, passed on; the rest of the buffer takes the next bytes. */
  flush(): Buffer {
    const out = this.buf.subarray(0, this.fill);
    this.buf = this.buf.subarray(this.fill);
    this.fill = 0;
    return out;
  }

  /** `b`: passed on as it is when large (what is filled first), else copied in. */
  *append(b: Buffer): Generator<Buffer> {
    if (b.length >= PASS_THROUGH) {
      if (this.fill > 0) yield this.flush();
      yield b;
      return;
    }
    if (this.room() < b.length) yield this.take();
    this.put(b);
  }

  put(b: Buffer): void {
    b.copy(this.buf, this.fill);
    this.fill += b.length;
  }

  /** `size` bytes of `src` from `at`: a short file's bytes one by one (Buffer.copy makes a view per call), a longer one's copied. */
  putFrom(src: Buffer, at: number, size: number): void {
    if (size > 256) {
      this.fill += src.copy(this.buf, this.fill, at, at + size);
      return;
    }
    const buf = this.buf;
    for (let i = 0; i < size; i++) buf[this.fill + i] = src[at + i]!;
    this.fill += size;
  }

  zeros(n: number): void {
    this.fill += n;
  }

  /**
   * The `size` bytes of `e`'s sourcePath, read into the chunk (which has room for size + 1).
   * One byte more is asked for: a file that grew since it was listed fails.
   */
  readSmall(e: LayerEntry, size: number): void {
    let fd: number;
    try {
      fd = openSync(e.sourcePath!, "r");
    } catch (err) {
      throw readFailed(e, "read", err);
    }
    let got = 0;
    try {
      for (;;) {
        const n = readSync(fd, this.buf, this.fill + got, size + 1 - got, null);
        got += n;
        // A short read of a regular file is its end; 0 is the end however the file is served.
        if (n === 0 || got === size) break;
        if (got > size) throw sizeMismatch(e, `has more content than its declared size ${size}`);
      }
    } catch (err) {
      throw isOcibuildError(err) ? err : readFailed(e, "read", err);
    } finally {
      closeSync(fd);
    }
    if (got !== size) throw sizeMismatch(e, `has ${got} bytes of content, but its declared size is ${size}`);
    this.fill += size;
  }
}

/** Streamed content (large files, entries without a sourcePath), checked against the declared size. */
async function* streamContent(e: LayerEntry, size: number, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  let stream: NodeJS.ReadableStream;
  try {
    stream = await e.open!(signal);
  } catch (err) {
    if (isOcibuildError(err) || signal?.aborted) throw err;
    throw readFailed(e, "open", err);
  }
  let seen = 0;
  try {
    for await (const raw of stream) {
      const chunk = typeof raw === "string" ? Buffer.from(raw) : (raw as Buffer);
      seen += chunk.length;
      if (seen > size) throw sizeMismatch(e, `has more content than its declared size ${size}`);
      yield chunk;
    }
  } catch (err) {
    if (isOcibuildError(err) || signal?.aborted) throw err;
    throw readFailed(e, "read", err);
  } finally {
    const d = (stream as { destroy?: () => void }).destroy;
    if (typeof d === "function") d.call(stream);
  }
  if (seen !== size) throw sizeMismatch(e, `has ${seen} bytes of content, but its declared size is ${size}`);
}

interface PackOptions {
  /** The writer's sourceDateEpoch: a tar segment must have been packed with it. */
  epoch: number | undefined;
  /** An entry's mtime in whole seconds. */
  mtimeOf: (e: LayerEntry) => number;
  /** Called before each entry. */
  checkAborted: () => void;
  signal: AbortSignal | undefined;
}

function isSegment(e: LayerEntry | TarSegment): e is TarSegment {
  return (e as TarSegment).tar !== undefined;
}

/** A tar segment's bytes, as they are (see Chunk.append). */
function* packed(c: Chunk, s: TarSegment, epoch: number | undefined): Generator<Buffer> {
  // A programming error, not the user's: the snapshot packs with the layer's own epoch.
  if (s.sourceDateEpoch !== epoch) throw new Error(`a tar segment packed with sourceDateEpoch ${s.sourceDateEpoch} given to a writer with ${epoch}`);
  yield* c.append(s.tar.subarray(s.at, s.at + s.length));
  if (c.fill >= FLUSH_BYTES) yield c.flush();
}

/**
 * The tar bytes of `entries` (each validated before any of its bytes), then the end
 * marker, as chunks of about FLUSH_BYTES (streamed pieces of PASS_THROUGH or more are
 * passed on as they come); tar segments are passed on, or copied, as they are.
 */
export async function* packTar(entries: LayerEntries, opts: PackOptions): AsyncGenerator<Buffer> {
  const { mtimeOf, checkAborted, signal } = opts;
  const c = new Chunk();
  for await (const got of entries) {
    // A source may give its entries in arrays (LayerEntries): one await each.
    const list = (Array.isArray(got) ? got : [got]) as readonly (LayerEntry | TarSegment)[];
    for (const e of list) {
      checkAborted();
      if (isSegment(e)) {
        yield* packed(c, e, opts.epoch);
        continue;
      }
      validateEntry(e);
      if (c.room() < BLOCK) yield c.take();
      const h = encodeHeaderInto(e, mtimeOf(e), c.buf, c.fill);
      if (typeof h === "number") c.fill += h;
      else {
        // PAX records (long or non-ASCII names, xattrs): the header blocks come as a buffer.
        if (c.room() < h.length) yield c.take();
        if (h.length > c.room()) yield h;
        else c.put(h);
      }
      const size = e.type === "file" ? (e.size ?? 0) : 0;
      if (size === 0) continue;
      if (e.content !== undefined) {
        const at = e.contentAt ?? 0;
        if (size >= PASS_THROUGH) yield* c.append(e.content.subarray(at, at + size));
        else {
          if (c.room() <= size) yield c.take();
          c.putFrom(e.content, at, size);
        }
      } else if (e.sourcePath !== undefined && size <= SMALL_FILE) {
        if (c.room() <= size) yield c.take();
        c.readSmall(e, size);
      } else {
        for await (const piece of streamContent(e, size, signal)) yield* c.append(piece);
      }
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (c.room() < pad) yield c.take();
      c.zeros(pad);
      if (c.fill >= FLUSH_BYTES) yield c.flush();
    }
  }
  if (c.room() < 2 * BLOCK) yield c.take();
  c.zeros(2 * BLOCK);
  yield c.take();
}
