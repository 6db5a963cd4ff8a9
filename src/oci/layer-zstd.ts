/**
 * zstd for layers.
 *
 * Writing: the tar is cut into ZSTD_FRAME_BYTES pieces, each compressed as an
 * independent zstd frame (RFC 8878 section 3.1: a zstd stream is a sequence of
 * frames; zstd(1), Go's klauspost/compress used by containerd, skopeo and BuildKit,
 * umoci and node:zlib decode them as one stream), a few at once on libuv's
 * threadpool by @toondepauw/node-zstd (libzstd through N-API), written in order
 * (layer-pieces.ts). The same encoder on every Node version: a layer's digest depends
 * only on the tar, the level and the locked encoder version, never on the thread
 * count or whether this Node has zstd of its own. Frames carry their content size
 * and no checksum (the layer's digest and DiffID already cover every byte).
 *
 * Reading: node:zlib's streaming decompressor where Node has one (22.15 and later),
 * one per frame (zstd-frames.ts), otherwise fzstd (pure JavaScript, streaming, on the main thread: ~130 MB/s of tar
 * for the usual 2-8 MiB windows, much slower for windows of 64 MiB and more).
 *
 * Both packages are imported on first use: a build that meets no zstd layer never
 * loads them.
 */
import { Transform, type TransformCallback } from "node:stream";
import * as zlib from "node:zlib";
import { OcibuildError } from "../errors.js";
import { compressPieces } from "./layer-pieces.js";
import { ZstdFrameStream } from "./zstd-frames.js";

/**
 * Uncompressed bytes per zstd frame. Each frame starts with an empty window, so every
 * cut costs the matches that would have reached back across it. At level 3, on the
 * 125 MB /usr/lib/gcc tar: 4 MiB frames give 35.1% of the tar against 35.0% for one
 * frame (zstd -3). Same size as a gzip member, so memory and parallelism match.
 */
export const ZSTD_FRAME_BYTES = 4 * 1024 * 1024;

/** Frames being compressed at once (see MEMBERS_IN_FLIGHT in layer-gzip.ts for why three). */
export const FRAMES_IN_FLIGHT = 3;

/**
 * zstd level used when none is given: zstd's own default, and what BuildKit's zstd
 * (klauspost's SpeedDefault) is modelled on. On the /usr/lib/gcc tar, 8 MiB of it:
 * level 1 4.52 MB, 3 4.01 MB, 9 3.64 MB, 19 3.33 MB; level 3 compresses 125 MB in
 * ~0.8 s of CPU where our gzip level 6 takes ~3.2 s for a larger result (36.7%).
 */
export const DEFAULT_ZSTD_LEVEL = 3;

/** zstd levels accepted: 1-22 (zstd's scale; 0 means the default, 3). */
export const MAX_ZSTD_LEVEL = 22;

type Encode = (input: Buffer) => Promise<Buffer>;

interface ZlibWithZstd {
  createZstdDecompress?: (opts?: { chunkSize?: number }) => Transform;
}

/** The frame encoder for `level`, loaded on first use. */
async function zstdEncoder(level: number): Promise<Encode> {
  let mod: typeof import("./zstd-native.js");
  try {
    mod = await import("./zstd-native.js");
  } catch (e) {
    throw new OcibuildError("LAYER_COMPRESSION_UNAVAILABLE", `zstd compression needs @toondepauw/node-zstd's prebuilt binary, which could not be loaded: ${(e as Error).message}`, {
      cause: e,
      hint: "reinstall ocibuild with its optional dependencies (npm installs the binary for linux x64 and arm64, glibc and musl), or write gzip layers",
    });
  }
  const encoder = new mod.Encoder(level === 0 ? DEFAULT_ZSTD_LEVEL : level);
  return (input) => encoder.encode(input);
}

/**
 * A pipeline stage: bytes in, zstd frames of ZSTD_FRAME_BYTES of input each out, in
 * order, at most `inFlight` being compressed at once. The encoder is loaded when the
 * first bytes arrive.
 */
export function zstdFrames(level: number, frameBytes = ZSTD_FRAME_BYTES, inFlight = FRAMES_IN_FLIGHT) {
  return async function* (source: AsyncIterable<Buffer>, opts?: { signal?: AbortSignal }): AsyncGenerator<Buffer> {
    const encode = await zstdEncoder(level);
    // An encode in flight cannot be stopped; its result is dropped.
    yield* compressPieces(frameBytes, inFlight, (input) => ({ done: encode(input).then((b) => [b]), cancel: () => {} }))(source, opts);
  };
}

/**
 * fzstd as a stream. Its decoder is created with the first chunk; each block it
 * decodes is a fresh array, handed on without a copy.
 */
class FzstdDecompress extends Transform {
  private decoder?: import("fzstd").Decompress;

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
 * A streaming zstd decompressor: node:zlib's where this Node has one (one per frame:
 * alone it stops after the first, see zstd-frames.ts), fzstd's otherwise.
 */
export function zstdDecompressor(): NodeJS.ReadWriteStream {
  const z = zlib as unknown as ZlibWithZstd;
  const native = z.createZstdDecompress;
  if (typeof native === "function") return new ZstdFrameStream(() => native({ chunkSize: 256 * 1024 }));
  return new FzstdDecompress();
}
