/**
 * Reading zstd layers: node:zlib's streaming decompressor where Node has one (22.15
 * and later), one per frame (zstd-frames.ts), otherwise fzstd (pure JavaScript,
 * streaming, on the main thread: ~140 MB/s of tar for the usual 2-8 MiB windows, much
 * slower for windows of 64 MiB and more, as `zstd --long` writes). fzstd is imported
 * on first use: a build that reads no zstd layer never loads it.
 */
import { Transform, type TransformCallback } from "node:stream";
import { zlib } from "../builtins.js";
import { ZstdFrameStream } from "./zstd-frames.js";

interface ZlibWithZstd {
  createZstdDecompress?: (opts?: { chunkSize?: number; writableHighWaterMark?: number }) => Transform;
}

/**
 * A per-frame decoder takes one write at a time (ZstdFrameStream writes one block
 * piece each and waits for 'drain'): a Transform decodes buffered writes without
 * waiting for its output to be read once its input has ended, so writes queued
 * before the frame's end would all be decoded at once (a bomb of small RLE blocks:
 * 256 MiB from 8 KB).
 */
const FRAME_DECODER_OPTIONS = { chunkSize: 256 * 1024, writableHighWaterMark: 1 };

/**
 * fzstd as a stream. Its decoder is created with the first chunk; each block it
 * decodes is a fresh array, handed on without a copy.
 */
class FzstdDecompress extends Transform {
  private decoder?: import("fzstd").Decompress;

  constructor() {
    // One write waiting at a time (see FRAME_DECODER_OPTIONS).
    super({ writableHighWaterMark: 1 });
  }

  private async ready(): Promise<import("fzstd").Decompress> {
    if (this.decoder === undefined) {
      const { Decompress } = await import("fzstd");
      this.decoder ??= new Decompress((data) => {
        if (data.length > 0) this.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      });
    }
    return this.decoder;
  }

  private feed(chunk: Uint8Array, final: boolean, cb: TransformCallback): void {
    this.ready().then(
      (d) => {
        try {
          d.push(chunk, final);
        } catch (e) {
          return cb(new Error(`invalid zstd data: ${(e as Error).message}`));
        }
        cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.feed(chunk, false, cb);
  }

  override _flush(cb: TransformCallback): void {
    this.feed(new Uint8Array(0), true, cb);
  }
}

/** fzstd's streaming decompressor (what zstdDecompressor gives on a Node without zstd; exported for tests). */
export function fzstdDecompressor(): NodeJS.ReadWriteStream {
  return new FzstdDecompress();
}

/**
 * A streaming zstd decompressor: node:zlib's where this Node has one, fzstd's
 * otherwise; either one per frame, behind ZstdFrameStream (node:zlib's alone stops
 * after the first frame; both are kept from windows above MAX_WINDOW).
 */
export function zstdDecompressor(): NodeJS.ReadWriteStream {
  const z = zlib() as unknown as ZlibWithZstd;
  const native = z.createZstdDecompress;
  if (typeof native === "function") return new ZstdFrameStream(() => native(FRAME_DECODER_OPTIONS));
  return new ZstdFrameStream(() => new FzstdDecompress());
}
