/**
 * A zstd stream decoded frame by frame. node:zlib's zstd decompressor (Node 22.15+)
 * stops at the end of the first frame and drops the rest without an error, and ends
 * without one on truncated input (Node 22.23.3: two concatenated frames "aaaa" and
 * "bbbb" decode to "aaaa"). A layer is often several frames (ours are 4 MiB frames),
 * so this walks the frame structure (RFC 8878 section 3.1: frame header, block
 * headers, optional checksum; skippable frames), hands each frame's bytes as they
 * arrive to a fresh per-frame decoder, and fails on input that ends inside a frame.
 * Memory stays flat: no frame is buffered, only headers of a few bytes; output is
 * decoded only as fast as it is read (see startFrame); and a frame
 * that asks for a window above MAX_WINDOW is refused before any decoder allocates it
 * (a hostile layer could otherwise ask for gigabytes).
 */
import { Transform, type TransformCallback } from "node:stream";

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

/**
 * The largest window a frame may need: 128 MiB, libzstd's default limit for
 * decompression (ZSTD_WINDOWLOG_LIMIT_DEFAULT, 2^27), which zstd(1) also applies
 * unless told --long=N or --memory. Frames written with a larger window (`zstd
 * --long=28` and up) are refused, as they are by zstd -d without its flag.
 */
export const MAX_WINDOW = 2 ** 27;

type Phase = "magic" | "skipSize" | "skip" | "descriptor" | "header" | "blockHeader" | "blockBody" | "checksum";

/** Header bytes (after the descriptor) a frame header has: window descriptor, dictionary ID, content size. */
function headerRest(d: number): number {
  const fcsFlag = d >> 6;
  const single = (d >> 5) & 1;
  const dictBytes = [0, 1, 2, 4][d & 3]!;
  const fcsBytes = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!;
  return (single ? 0 : 1) + dictBytes + fcsBytes;
}

/** The window a frame needs, from its descriptor `d` and the header bytes after it (RFC 8878 3.1.1.1.2). */
export function frameWindow(d: number, rest: Buffer): number {
  if (((d >> 5) & 1) === 0) {
    const wd = rest[0]!;
    const base = 2 ** (10 + (wd >> 3));
    return base + (base / 8) * (wd & 7);
  }
  // Single segment: the window is the content size, the header's last field.
  const fcsFlag = d >> 6;
  const size = [1, 2, 4, 8][fcsFlag]!;
  const at = rest.length - size;
  if (size === 1) return rest[at]!;
  if (size === 2) return rest.readUInt16LE(at) + 256;
  if (size === 4) return rest.readUInt32LE(at);
  return Number(rest.readBigUInt64LE(at));
}

export class ZstdFrameStream extends Transform {
  private phase: Phase = "magic";
  private want = 4;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private checksum = false;
  private descriptor = 0;
  private last = false;
  private frames = 0;
  private inner?: NodeJS.ReadWriteStream;
  private innerDone?: Promise<void>;

  /** `frameDecoder` makes the decoder of one frame (it gets exactly that frame's bytes). */
  constructor(private readonly frameDecoder: () => NodeJS.ReadWriteStream) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.consume(chunk).then(() => cb(), (e: unknown) => cb(e as Error));
  }

  override _flush(cb: TransformCallback): void {
    if (this.phase !== "magic" || this.heldBytes > 0) return cb(new Error("invalid zstd data: truncated inside a frame"));
    if (this.frames === 0) return cb(new Error("invalid zstd data: no frame"));
    cb();
  }

  private async consume(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(this.want - this.heldBytes, chunk.length - off);
      const piece = chunk.subarray(off, off + n);
      off += n;
      if (this.phase === "blockBody" || this.phase === "skip") {
        if (this.phase === "blockBody") await this.forward(piece);
        this.want -= n;
        if (this.want === 0) await this.next(Buffer.alloc(0));
        continue;
      }
      this.held.push(piece);
      this.heldBytes += n;
      if (this.heldBytes < this.want) continue;
      const field = Buffer.concat(this.held, this.heldBytes);
      this.held = [];
      this.heldBytes = 0;
      await this.next(field);
    }
  }

  /** The current phase is complete (`field` holds its bytes for header phases): on to the next. */
  private async next(field: Buffer): Promise<void> {
    switch (this.phase) {
      case "magic": {
        const magic = field.readUInt32LE(0);
        if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) return this.to("skipSize", 4);
        if (magic !== ZSTD_MAGIC) throw new Error(`invalid zstd data: not a frame (magic ${magic.toString(16)})`);
        this.startFrame();
        await this.forward(field);
        return this.to("descriptor", 1);
      }
      case "skipSize":
        return field.readUInt32LE(0) === 0 ? this.to("magic", 4) : this.to("skip", field.readUInt32LE(0));
      case "skip":
        return this.to("magic", 4);
      case "descriptor": {
        const d = field[0]!;
        if (d & 0x08) throw new Error("invalid zstd data: reserved bit set in a frame header");
        this.checksum = ((d >> 2) & 1) === 1;
        this.descriptor = d;
        await this.forward(field);
        // Never 0: a frame header has a window descriptor or a content size.
        return this.to("header", headerRest(d));
      }
      case "header": {
        const window = frameWindow(this.descriptor, field);
        if (window > MAX_WINDOW) {
          throw new Error(`invalid zstd data: a frame needs a ${Math.ceil(window / 2 ** 20)} MiB window, more than the ${MAX_WINDOW / 2 ** 20} MiB allowed`);
        }
        await this.forward(field);
        return this.to("blockHeader", 3);
      }
      case "blockHeader": {
        await this.forward(field);
        const v = field[0]! | (field[1]! << 8) | (field[2]! << 16);
        const type = (v >> 1) & 3;
        if (type === 3) throw new Error("invalid zstd data: reserved block type");
        this.last = (v & 1) === 1;
        const body = type === 1 ? 1 : v >>> 3;
        return body > 0 ? this.to("blockBody", body) : this.afterBlock();
      }
      case "blockBody":
        return this.afterBlock();
      case "checksum":
        await this.forward(field);
        return this.endFrame();
    }
  }

  private to(phase: Phase, want: number): void {
    this.phase = phase;
    this.want = want;
  }

  private async afterBlock(): Promise<void> {
    if (!this.last) return this.to("blockHeader", 3);
    if (this.checksum) return this.to("checksum", 4);
    return this.endFrame();
  }

  private startFrame(): void {
    const inner = this.frameDecoder();
    this.inner = inner;
    this.frames++;
    // Backpressure from whoever reads us reaches the decoder: paused while our buffer is
    // full, resumed when more is read. The decoder gets one block (at most 128 KiB of
    // output) per write and defers the next while its own output is unread, so a
    // zstd bomb (RLE blocks: 4 bytes each for 128 KiB) is decoded only as it is read.
    inner.on("data", (c: Buffer) => {
      if (!this.push(c)) inner.pause();
    });
    this.innerDone = new Promise((resolve, reject) => {
      inner.once("end", resolve);
      inner.once("error", reject);
    });
    // Rejections are taken by endFrame or forward; never unhandled.
    this.innerDone.catch(() => {});
  }

  private async forward(bytes: Buffer): Promise<void> {
    const inner = this.inner!;
    if (bytes.length === 0 || inner.write(bytes)) return;
    await Promise.race([new Promise<void>((resolve) => inner.once("drain", resolve)), this.innerDone]);
  }

  private async endFrame(): Promise<void> {
    this.inner!.end();
    await this.innerDone;
    this.inner = undefined;
    this.to("magic", 4);
  }

  override _read(size: number): void {
    this.inner?.resume();
    super._read(size);
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    (this.inner as { destroy?: () => void } | undefined)?.destroy?.();
    cb(err);
  }
}
