/**
 * A streaming tar reader for layer extraction: ustar, GNU and PAX (per-entry and
 * global records, GNU long names), with PAX values kept as raw bytes so binary
 * xattrs (security.capability) arrive intact. Memory stays flat: a file body is
 * handed out as chunks of the input and must be consumed (or is skipped) before
 * the next entry is read. tarBytes() turns a layer blob (gzip, plain, or zstd where
 * Node has it) into the tar byte stream, sniffing the compression from magic bytes.
 */
import { pipeline as pipelineCb, Readable } from "node:stream";
import * as zlib from "node:zlib";
import { OcibuildError } from "../errors.js";

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

function invalid(message: string): OcibuildError {
  return new OcibuildError("ROOTFS_TAR_INVALID", `the layer is not a valid tar archive: ${message}`);
}

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
    return out;
  }

  /** Exactly n bytes if they have already arrived (no waiting), else undefined and nothing is consumed. */
  takeIfBuffered(n: number): Buffer | undefined {
    if (this.buf.length < n) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** n bytes as a sequence of chunks (no copy beyond what the input gives). */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0) {
        if (this.done) throw invalid("unexpected end of archive inside a file");
        const r = await this.it.next();
        if (r.done) {
          this.done = true;
          continue;
        }
        this.buf = asBuffer(r.value);
      }
      const take = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(take.length);
      left -= take.length;
      yield take;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const c of this.chunks(n)) void c;
  }
}

function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z === -1 ? b : b.subarray(0, z);
}

function num(b: Buffer, field: string): number {
  if (b.length > 0 && (b[0]! & 0x80) !== 0) {
    // GNU base-256: big-endian two's complement with the high bit as marker.
    if (b[0] === 0xff) throw invalid(`negative ${field}`);
    let v = b[0]! & 0x7f;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i]!;
    if (!Number.isSafeInteger(v)) throw invalid(`${field} out of range`);
    return v;
  }
  const s = cstr(b).toString("latin1").trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw invalid(`bad octal ${field} "${s}"`);
  return parseInt(s, 8);
}

function checksumOk(block: Buffer): boolean {
  const stored = num(block.subarray(148, 156), "checksum");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === stored;
}

function parsePax(body: Buffer, into: Map<string, Buffer>): void {
  let off = 0;
  while (off < body.length) {
    const sp = body.indexOf(0x20, off);
    if (sp === -1) break;
    const len = parseInt(body.toString("latin1", off, sp), 10);
    if (!Number.isSafeInteger(len) || len <= 0 || off + len > body.length) throw invalid("bad PAX record length");
    const rec = body.subarray(sp + 1, off + len - 1); // drop trailing "\n"
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw invalid("PAX record without '='");
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

const MAX_META = 16 * 1024 * 1024;

/** Read a tar archive from a byte stream. */
export async function* readTar(input: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(input[Symbol.asyncIterator]());
  const global = new Map<string, Buffer>();
  let pax = new Map<string, Buffer>();
  let longName: string | undefined;
  let longLink: string | undefined;
  let pending: { left: () => number } | undefined;

  for (;;) {
    if (pending) {
      const left = pending.left();
      if (left > 0 && r.takeIfBuffered(left) === undefined) await r.skip(left);
      pending = undefined;
    }
    const block = r.takeIfBuffered(BLOCK) ?? (await r.read(BLOCK));
    if (block.length === 0) return; // tolerated: no end-of-archive blocks
    if (block.length < BLOCK) throw invalid("truncated header");
    if (block.every((b) => b === 0)) return; // end of archive (the second zero block is optional to us)
    if (!checksumOk(block)) throw invalid("header checksum mismatch");

    const flag = String.fromCharCode(block[156]!);
    const size = num(block.subarray(124, 136), "size");

    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      if (size > MAX_META) throw invalid(`metadata record of ${size} bytes`);
      const body = (await r.read(Math.ceil(size / BLOCK) * BLOCK)).subarray(0, size);
      if (body.length < size) throw invalid("truncated metadata record");
      if (flag === "x") parsePax(body, pax);
      else if (flag === "g") parsePax(body, global);
      else if (flag === "L") longName = cstr(body).toString("utf8");
      else longLink = cstr(body).toString("utf8");
      continue;
    }

    const magic = block.toString("latin1", 257, 263);
    let name = cstr(block.subarray(0, 100)).toString("utf8");
    if (magic === "ustar\0") {
      const prefix = cstr(block.subarray(345, 500)).toString("utf8");
      if (prefix !== "") name = `${prefix}/${name}`;
    }
    const records = new Map([...global, ...pax]);
    const text = (k: string) => records.get(k)?.toString("utf8");
    const pnum = (k: string, fallback: number) => {
      const v = text(k);
      if (v === undefined) return fallback;
      const n = Number(v);
      if (!Number.isFinite(n)) throw invalid(`bad PAX ${k} "${v}"`);
      return n;
    };
    const header: TarHeader = {
      name: text("path") ?? longName ?? name,
      type: TYPES[flag] ?? "other",
      flag,
      mode: num(block.subarray(100, 108), "mode"),
      uid: pnum("uid", num(block.subarray(108, 116), "uid")),
      gid: pnum("gid", num(block.subarray(116, 124), "gid")),
      size: pnum("size", size),
      mtime: new Date(Math.floor(pnum("mtime", num(block.subarray(136, 148), "mtime")) * 1000)),
      linkname: text("linkpath") ?? longLink ?? cstr(block.subarray(157, 257)).toString("utf8"),
      uname: text("uname") ?? cstr(block.subarray(265, 297)).toString("utf8"),
      gname: text("gname") ?? cstr(block.subarray(297, 329)).toString("utf8"),
      devmajor: num(block.subarray(329, 337), "devmajor"),
      devminor: num(block.subarray(337, 345), "devminor"),
      pax: records,
    };
    pax = new Map();
    longName = undefined;
    longLink = undefined;

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
        const gen = (async function* () {
          for await (const c of r.chunks(bodySize)) {
            consumed += c.length;
            yield c;
          }
        })();
        return gen;
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
    pending = { left: () => bodySize - consumed + skipAfter };
    yield { header, body, takeBuffered };
  }
}

function decompressorFor(head: Buffer, mediaType: string | undefined): NodeJS.ReadWriteStream | null {
  // Larger output chunks: fewer round trips through the stream and tar reader per byte.
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return zlib.createGunzip({ chunkSize: 256 * 1024 });
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) {
    const z = zlib as unknown as { createZstdDecompress?: () => NodeJS.ReadWriteStream };
    if (typeof z.createZstdDecompress === "function") return z.createZstdDecompress();
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", `the layer is zstd-compressed${mediaType ? ` (${mediaType})` : ""}, which this Node.js (${process.version}) cannot decompress`, {
      hint: "use Node.js 22.15 or newer for zstd layers, or a gzip variant of the image",
    });
  }
  if (head.length >= 3 && head.toString("latin1", 0, 3) === "BZh") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", "the layer is bzip2-compressed, which OCI layers may not be");
  }
  if (head.length >= 6 && head[0] === 0xfd && head.toString("latin1", 1, 6) === "7zXZ\0") {
    throw new OcibuildError("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED", "the layer is xz-compressed, which OCI layers may not be");
  }
  return null;
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
  const source = Readable.from(rest());
  if (decompressor === null) return source;
  // Callback form: an error anywhere destroys the chain, so iterating the output throws it.
  return pipelineCb(source, decompressor, () => {}) as unknown as Readable;
}
