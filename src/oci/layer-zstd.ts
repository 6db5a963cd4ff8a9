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
 * Reading is zstd-decompress.ts's (kept apart so that readers never reach the encoder).
 *
 * The encoder is imported on first use: a build that writes no zstd layer never
 * loads it.
 */
import { OcibuildError } from "../errors.js";
import { compressPieces } from "./layer-pieces.js";

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
