/**
 * A streaming tar reader for layer extraction: ustar, GNU and PAX (per-entry and
 * global records, GNU long names), with PAX values kept as raw bytes so binary
 * xattrs (security.capability) arrive intact. Memory stays flat: a file body is
 * handed out as chunks of the input and must be consumed (or is skipped) before
 * the next entry is read. tarBytes() turns a layer blob (gzip, zstd or plain) into
 * the tar byte stream, sniffing the compression from magic bytes.
 */
import { pipeline as pipelineCb, Readable } from "node:stream";
import { zlib } from "../../builtins.js";
import { OcibuildError } from "../../errors.js";
import { zstdDecompressor } from "../../oci/zstd-decompress.js";
import {
  cstr, DEV_RANGE, fieldText, headerNumberAt, ID_RANGE, invalidTar, MODE_RANGE, paxInteger, paxTimeMs, SIZE_RANGE, TIME_RANGE, type FieldPlace,
} from "./tar-fields.js";

export type TarEntryType = "file" | "link" | "symlink" | "character-device" | "block-device" | "directory" | "fifo" | "other";

export interface TarHeader {
  name: string;
  type: TarEntryType;
  /** The raw type flag (for messages about "other"). */
  flag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: Date;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** PAX records (global then per-entry), values as raw bytes. */
  pax: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /** The body; iterate at most once. Unread bytes are skipped when the next entry is requested. */
  body: AsyncIterable<Buffer>;
  /**
   * The whole body at once, without waiting, when all of it has already arrived
   * (then it counts as read: do not iterate `body`); undefined otherwise.
   */
  takeBuffered(): Buffer | undefined;
}

const BLOCK = 512;

/**
 * A chunk as a Buffer, without copying: a stream's chunk belongs to its reader once
 * handed over (the producer never writes to it again), so views of it stay valid.
 */
function asBuffer(c: Uint8Array): Buffer {
  return Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
}

/** Pulls exact byte counts out of an async iterable of chunks. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  /** Bytes handed out so far: the offset of the next one in the archive. */
  position = 0;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<void> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length === 0 ? asBuffer(r.value) : Buffer.concat([this.buf, r.value]);
    }
  }

  /** Exactly n bytes, or fewer only at the end of input. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
    this.position += out.length;
    return out;
  }

  /** Exactly n bytes if they have already arrived (no waiting), else undefined and nothing is consumed. */
  takeIfBuffered(n: number): Buffer | undefined {
    if (this.buf.length < n) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.position += n;
    return out;
  }

  /** n bytes as a sequence of chunks (no copy beyond what the input gives). */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    // A count that is not a whole number would never reach zero: the loop would spin.
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`tar reader asked for ${n} bytes`);
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0) {
        if (this.done) throw invalidTar(`unexpected end of archive inside a file (at byte ${this.position})`);
        const r = await this.it.next();
        if (r.done) {
          this.done = true;
          continue;
        }
        this.buf = asBuffer(r.value);
      }
      const take = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(take.length);
      this.position += take.length;
      left -= take.length;
      yield take;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const c of this.chunks(n)) void c;
  }
}

const CHECKSUM_RANGE = { min: 0, max: 0o7777777 };

function checksumOk(block: Buffer, place: FieldPlace): boolean {
  const stored = headerNumberAt(block, 148, 8, "checksum", CHECKSUM_RANGE, place);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === stored;
}

function parsePax(body: Buffer, into: Map<string, Buffer>, place: FieldPlace): void {
  let off = 0;
  while (off < body.length) {
    if (body[off] === 0) break; // padding some writers leave after the last record
    const sp = body.indexOf(0x20, off);
    const lenText = sp === -1 ? "" : body.toString("latin1", off, sp);
    const len = /^[0-9]{1,10}$/.test(lenText) ? Number(lenText) : NaN;
    if (!(len > sp - off + 1) || off + len > body.length || body[off + len - 1] !== 0x0a) {
      throw invalidTar(`bad PAX record length "${lenText.slice(0, 20)}"`, place);
    }
    const rec = body.subarray(sp + 1, off + len - 1); // drop the trailing "\n"
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw invalidTar("PAX record without '='", place);
    const key = rec.toString("utf8", 0, eq);
    const value = rec.subarray(eq + 1);
    if (value.length === 0) into.delete(key);
    else into.set(key, Buffer.from(value));
    off += len;
  }
}

const TYPES: Record<string, TarEntryType> = {
  "0": "file", "\0": "file", "7": "file", "1": "link", "2": "symlink", "3": "character-device", "4": "block-device", "5": "directory", "6": "fifo",
};

/**
 * Extended headers are read into memory, so their size is bounded: the records
 * before one entry (PAX "x", GNU long name "L" and long link "K", any global "g")
 * to 4 MiB in all (a Linux path is at most 4 KiB, an xattr value 64 KiB), and the
 * global records, which stay in force for the rest of the layer, to 4 MiB over the
 * layer. Records beyond that are a memory bomb, not an image.
 */
export const MAX_ENTRY_META = 4 * 1024 * 1024;
export const MAX_GLOBAL_META = 4 * 1024 * 1024;

/** What the records before an entry (PAX "x" and "g", GNU "L" and "K") say about it. */
interface Pending {
  global: Map<string, Buffer>;
  pax: Map<string, Buffer>;
  longName?: string;
  longLink?: string;
  /** Extended-header bytes read since the last entry. */
  bytes: number;
  /** Global-header bytes read in this layer. */
  globalBytes: number;
}

const MiB = (n: number) => `${(n / 1048576).toFixed(n % 1048576 === 0 ? 0 : 1)} MiB`;

async function readMeta(r: ByteReader, block: Buffer, flag: string, meta: Pending, place: FieldPlace): Promise<void> {
  const size = headerNumberAt(block, 124, 12, "size", SIZE_RANGE, place);
  meta.bytes += size;
  if (meta.bytes > MAX_ENTRY_META) {
    throw invalidTar(`more than ${MiB(MAX_ENTRY_META)} of extended headers (PAX or GNU long names) before one entry`, place);
  }
  if (flag === "g") {
    meta.globalBytes += size;
    if (meta.globalBytes > MAX_GLOBAL_META) throw invalidTar(`more than ${MiB(MAX_GLOBAL_META)} of global PAX headers`, place);
  }
  const body = (await r.read(Math.ceil(size / BLOCK) * BLOCK)).subarray(0, size);
  if (body.length < size) throw invalidTar("truncated metadata record", place);
  if (flag === "x") parsePax(body, meta.pax, place);
  else if (flag === "g") parsePax(body, meta.global, place);
  else if (flag === "L") meta.longName = cstr(body).toString("utf8");
  else meta.longLink = cstr(body).toString("utf8");
}

/** Whether the header's magic (bytes 257-262) is POSIX ustar's "ustar\0". */
function isUstar(block: Buffer): boolean {
  return block[257] === 0x75 && block[258] === 0x73 && block[259] === 0x74 && block[260] === 0x61 && block[261] === 0x72 && block[262] === 0;
}

/** The header of an entry, its numbers checked, with the records before it applied. */
function parseHeader(block: Buffer, flag: string, meta: Pending, offset: number): TarHeader {
  let name = fieldText(block, 0, 100);
  if (isUstar(block)) {
    const prefix = fieldText(block, 345, 500);
    if (prefix !== "") name = `${prefix}/${name}`;
  }
  const records = meta.global.size === 0 ? new Map(meta.pax) : new Map([...meta.global, ...meta.pax]);
  const text = (k: string) => records.get(k)?.toString("utf8");
  name = text("path") ?? meta.longName ?? name;
  const place: FieldPlace = { entry: name, offset };
  const field = (at: number, width: number, what: string, range: typeof SIZE_RANGE) => headerNumberAt(block, at, width, what, range, place);
  const paxInt = (k: string, range: typeof SIZE_RANGE, fallback: () => number) => {
    const v = text(k);
    return v === undefined ? fallback() : paxInteger(v, k, range, place);
  };
  const mtime = text("mtime");
  return {
    name,
    type: TYPES[flag] ?? "other",
    flag,
    mode: field(100, 8, "mode", MODE_RANGE),
    uid: paxInt("uid", ID_RANGE, () => field(108, 8, "uid", ID_RANGE)),
    gid: paxInt("gid", ID_RANGE, () => field(116, 8, "gid", ID_RANGE)),
    size: paxInt("size", SIZE_RANGE, () => field(124, 12, "size", SIZE_RANGE)),
    mtime: new Date(mtime !== undefined ? paxTimeMs(mtime, "mtime", place) : field(136, 12, "mtime", TIME_RANGE) * 1000),
    linkname: text("linkpath") ?? meta.longLink ?? fieldText(block, 157, 257),
    uname: text("uname") ?? fieldText(block, 265, 297),
    gname: text("gname") ?? fieldText(block, 297, 329),
    devmajor: field(329, 8, "devmajor", DEV_RANGE),
    devminor: field(337, 8, "devminor", DEV_RANGE),
    pax: records,
  };
}

/** Read a tar archive from a byte stream. */
export async function* readTar(input: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(input[Symbol.asyncIterator]());
  const meta: Pending = { global: new Map(), pax: new Map(), bytes: 0, globalBytes: 0 };
  let pending: { left: () => number } | undefined;

  for (;;) {
    if (pending) {
      const left = pending.left();
      if (left > 0 && r.takeIfBuffered(left) === undefined) await r.skip(left);
      pending = undefined;
    }
    const offset = r.position;
    const block = r.takeIfBuffered(BLOCK) ?? (await r.read(BLOCK));
    if (block.length === 0) return; // tolerated: no end-of-archive blocks
    if (block.length < BLOCK) throw invalidTar(`truncated header at byte ${offset}`);
    if (block.every((b) => b === 0)) return; // end of archive (the second zero block is optional to us)
    if (!checksumOk(block, { offset })) throw invalidTar("header checksum mismatch", { offset });

    const flag = String.fromCharCode(block[156]!);
    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      await readMeta(r, block, flag, meta, { offset });
      continue;
    }
    const header = parseHeader(block, flag, meta, offset);
    meta.pax = new Map();
    meta.longName = undefined;
    meta.longLink = undefined;
    meta.bytes = 0;
    const entry = entryOf(r, header);
    pending = entry.pending;
    yield entry.entry;
  }
}

/** The entry handed out for a header, and how many bytes of it are left unread at any moment. */
function entryOf(r: ByteReader, header: TarHeader): { entry: TarEntry; pending: { left: () => number } } {
  // Header-only types (links, directories, devices, fifos) have no body whatever their size field says.
  const isFile = header.type === "file";
  const total = isFile || header.type === "other" ? Math.ceil(header.size / BLOCK) * BLOCK : 0;
  const bodySize = isFile ? header.size : 0;
  const skipAfter = total - bodySize;
  let consumed = 0;
  let started = false;
  const body: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]: () => {
      if (started) throw new Error("tar entry body iterated twice");
      started = true;
      return (async function* () {
        for await (const c of r.chunks(bodySize)) {
          consumed += c.length;
          yield c;
        }
      })();
    },
  };
  const takeBuffered = (): Buffer | undefined => {
    if (started) throw new Error("tar entry body iterated twice");
    const whole = r.takeIfBuffered(bodySize);
    if (whole !== undefined) {
      started = true;
      consumed = bodySize;
    }
    return whole;
  };
  return { entry: { header, body, takeBuffered }, pending: { left: () => bodySize - consumed + skipAfter } };
}

/** The decompressor for a layer blob starting with `head` (gzip or zstd), null for a plain tar; other compressions throw. */
export function decompressorFor(head: Buffer, mediaType: string | undefined): NodeJS.ReadWriteStream | null {
  // Larger output chunks: fewer round trips through the stream and tar reader per byte.
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return zlib().createGunzip({ chunkSize: 256 * 1024 });
  // node:zlib's zstd where Node has it, fzstd otherwise (loaded only now).
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return zstdDecompressor();
  if (head.length >= 3 && head.toString("latin1", 0, 3) === "BZh") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", `the layer${mediaType ? ` (${mediaType})` : ""} is bzip2-compressed, which OCI layers may not be`);
  }
  if (head.length >= 6 && head[0] === 0xfd && head.toString("latin1", 1, 6) === "7zXZ\0") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", `the layer${mediaType ? ` (${mediaType})` : ""} is xz-compressed, which OCI layers may not be`);
  }
  return null;
}

/**
 * Compressed bytes are handed to the decompressor in pieces of about this size: each
 * write is one trip to the thread pool and back, and a registry's response arrives in
 * pieces of 64 KiB and less (1,600 trips for a 60 MB base layer; measured: a sixth
 * less CPU for its gunzip in 1 MiB pieces, and fuller 256 KiB pieces for the tar reader).
 */
const DECOMPRESS_BATCH = 1 << 20;

/** `chunks` joined into pieces of at least `size` bytes (the last one smaller). */
async function* batched(chunks: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let held: Buffer[] = [];
  let n = 0;
  for await (const c of chunks) {
    if (n === 0 && c.length >= size) {
      yield c;
      continue;
    }
    held.push(c);
    n += c.length;
    if (n >= size) {
      yield Buffer.concat(held, n);
      held = [];
      n = 0;
    }
  }
  if (n > 0) yield Buffer.concat(held, n);
}

/** Read the first bytes, pick a decompressor, and return the tar bytes as a stream. */
export async function tarBytes(input: NodeJS.ReadableStream, mediaType: string | undefined): Promise<Readable> {
  const src = input instanceof Readable ? input : new Readable().wrap(input);
  const it = (src as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  let done = false;
  while (head.length < 6) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head = Buffer.concat([head, asBuffer(r.value)]);
  }
  const decompressor = decompressorFor(head, mediaType);
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield asBuffer(r.value);
    }
  }
  const source = Readable.from(decompressor === null ? rest() : batched(rest(), DECOMPRESS_BATCH));
  if (decompressor === null) return source;
  // Callback form: an error anywhere destroys the chain, so iterating the output throws it.
  return pipelineCb(source, decompressor, () => {}) as unknown as Readable;
}
