/**
 * The layer writer: entries -> PAX tar -> gzip (or zstd, or nothing) -> out, in one
 * streaming pass that also yields the DiffID (sha256 of the tar), and the digest and
 * size of the compressed blob.
 * Memory does not grow with the layer: file contents are opened lazily, one at a
 * time, and flow through with stream backpressure.
 */
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OcibuildError, isOcibuildError } from "../errors.js";
import { type DiffID, type Digest, HashingStream } from "./digest.js";
import { checkLevel, compressionStage, layerMediaType, type LayerCompression } from "./layer-compression.js";
import { packTar } from "./layer-pack.js";
import { DEFAULT_ZSTD_LEVEL } from "./layer-zstd.js";

export type EntryType = "file" | "directory" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface LayerEntry {
  /** Relative to the layer root, "/"-separated, no leading "/" or "./", no trailing "/" (e.g. "etc/passwd", ".wh.foo"). */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky; only `mode & 0o7777` is written. */
  mode: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  /** Written in whole seconds (floored). */
  mtime: Date;
  /** Files: content length (required for "file"); the content must be exactly this long. */
  size?: number;
  /** Symlink target, or the layer-relative path a hardlink points to. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Written as SCHILY.xattr.<name> PAX records, sorted by name. */
  xattrs?: Record<string, Buffer>;
  /** File content, opened lazily when the entry is written (one file open at a time). */
  open?: (signal?: AbortSignal) => NodeJS.ReadableStream | Promise<NodeJS.ReadableStream>;
  /**
   * The file on disk the content comes from, when there is one: small files are then
   * read in one call instead of through a stream (the per-file stream set-up, not gzip,
   * limited layers of many small files).
   */
  sourcePath?: string;
  /**
   * The content, already read: the `size` bytes of this buffer from `contentAt` (0 if
   * unset), written as they are, before `sourcePath` or `open` (a snapshot's worker
   * threads read small files ahead of the tar, many into one buffer).
   */
  content?: Buffer;
  contentAt?: number;
}

/**
 * Whole tar entries already encoded: `length` bytes of `tar` from `at`, each entry a
 * ustar header, the content and its padding, as the tar writer would have written them
 * with this `sourceDateEpoch` (writeLayer refuses another). A snapshot's worker threads
 * pack small files this way (builder/fs/file-readers.ts).
 */
export interface TarSegment {
  tar: Buffer;
  at: number;
  length: number;
  /** How many entries, and how many bytes of content they hold. */
  entries: number;
  contentBytes: number;
  sourceDateEpoch: number | undefined;
}

/**
 * A layer's entries, in order. An async source may give them in arrays, with tar
 * segments among them: a snapshot of 100,000 files does, one await per array instead
 * of one per entry.
 */
export type LayerEntries = Iterable<LayerEntry> | AsyncIterable<LayerEntry | readonly (LayerEntry | TarSegment)[]>;

export interface LayerWriteOptions {
  /** Default "gzip". zstd layers are written as independent frames (layer-zstd.ts). */
  compression?: LayerCompression;
  /**
   * gzip level, 0-9, default DEFAULT_COMPRESSION_LEVEL (see there for the trade-off);
   * zstd level, 0-22, default DEFAULT_ZSTD_LEVEL (0 is zstd's default too).
   */
  compressionLevel?: number;
  /** Seconds since the epoch (SOURCE_DATE_EPOCH): every mtime later than this is clamped down to it. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  /**
   * Called once the whole tar has been produced and hashed, with its DiffID and size,
   * while its compressed bytes may still be on their way (a small layer's gzip member
   * takes tens of milliseconds after its last file was read). Every file of the layer
   * has been read by then. The write's own promise still settles as before.
   */
  onTar?: (tar: { diffId: DiffID; size: number }) => void;
}

export interface WrittenLayer {
  /** The OCI layer media type of the compression written (tar+gzip by default). */
  mediaType: string;
  /** sha256 of the blob (the compressed bytes). */
  digest: Digest;
  /** sha256 of the uncompressed tar. */
  diffId: DiffID;
  /** Blob bytes. */
  size: number;
  /** tar bytes. */
  uncompressedSize: number;
}

/**
 * gzip level used when none is given. Measured on the 2-core build machine
 * (shared with other work, so absolute numbers are noisy; the ratios are what
 * matter): writeLayer(walkDirectory(dir)) to a null sink, tar + gzip + both
 * sha256 in one pass, medians of 1-7 runs, MB/s of tar, size as % of the tar.
 *                                         level 1          | level 6          | level 9
 *   /usr/lib/gcc (125 MB, 168 binaries)   61 MB/s, 39.9%   | 40 MB/s, 36.7%   | 13 MB/s, 36.6%
 *   /usr/share/go (123 MB, 11,759 files)  45 MB/s, 24.8%   | 33 MB/s, 21.4%   | 14 MB/s, 21.1%
 * gzip dominates; the two sha256 passes are noise next to it. Since the tar is
 * compressed in GZIP_MEMBER_BYTES members on the threadpool (layer-gzip.ts), a
 * layer write uses both cores where the one-stream writer used one: level 6 went
 * from 24 to 40 MB/s on the binaries (1.7-1.8 cores busy, against 0.96), and from
 * 25 to 33 MB/s on the many small files, where walking and reading on the main
 * thread, not gzip, is now the limit (1.2 cores busy); GNU `gzip -6` alone does
 * 16 and 22 MB/s on the same tars. Level 9 saves under 1% over 6 at 2.4-3x the
 * time. Level 1 is 1.35-1.5x as fast as 6 for 9-16% bigger layers. We keep 6: it is
 * zlib's and Go's default, so layers come out the size users know from
 * Docker/BuildKit, and registries and caches keep them (and pull them) many times
 * for each time they are built. Pass compressionLevel 1 when the network is
 * faster than gzip.
 *
 * Member size: every cut starts a new dictionary (and adds 18 bytes of header and
 * trailer). Extra size at level 6 against one gzip stream, same two trees:
 *   256 KiB: +0.65% / +1.07% | 1 MiB: +0.16% / +0.27% | 4 MiB: +0.015% / +0.11% | 8 MiB: +0.008% / +0.06%
 * Speed differences from 256 KiB to 8 MiB were within this machine's noise.
 * 4 MiB keeps the cost near 0.1% and memory near (MEMBERS_IN_FLIGHT + 1) x 4 MiB
 * of input; a layer under 4 MiB is one member, at levels 1-9 byte for byte the
 * single gzip stream of before (when it compresses at all).
 *
 * Incompressible members (compressed archives, media, random data) are stored, not
 * deflated: level 6 runs at ~30 MB/s on random bytes and saves nothing (4 MiB:
 * 116-161 ms at level 6 for 100.03% of the input; stored, 4-11 ms for 100.02%). A
 * 0.2 ms probe of 32 samples decides (layer-gzip.ts looksIncompressible), from the
 * bytes alone; float32 weights (gzip saves ~8%) are still compressed.
 */
export const DEFAULT_COMPRESSION_LEVEL = 6;

/** The level a layer of this compression is written at when none is given. */
export function defaultLevel(c: LayerCompression): number {
  return c === "gzip" ? DEFAULT_COMPRESSION_LEVEL : c === "zstd" ? DEFAULT_ZSTD_LEVEL : 0;
}

/** Throws OcibuildError ABORTED (with the signal's reason as cause) if `signal` is aborted. */
export function checkAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new OcibuildError("ABORTED", `${what} was interrupted`, { cause: signal.reason });
}

function mtimeSeconds(e: LayerEntry, epoch: number | undefined): number {
  const s = Math.floor(e.mtime.getTime() / 1000);
  return epoch !== undefined && s > epoch ? epoch : s;
}

/**
 * The tar stream of `entries` as chunks (layer-pack.ts: headers, small files and
 * padding packed into chunks of about 512 KiB). Exposed for uncompressed layers and
 * golden tests; writeLayer is the one-pass tar+gzip+hash path.
 */
export async function* tarChunks(
  entries: LayerEntries,
  opts: { sourceDateEpoch?: number; signal?: AbortSignal } = {},
): AsyncGenerator<Buffer> {
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isSafeInteger(epoch) || epoch < 0)) {
    throw new OcibuildError("LAYER_OPTIONS_INVALID", `sourceDateEpoch ${epoch} is not a non-negative integer number of seconds`);
  }
  const { signal } = opts;
  yield* packTar(entries, { epoch, mtimeOf: (e) => mtimeSeconds(e, epoch), checkAborted: () => checkAborted(signal, "writing the layer"), signal });
}

function aborted(signal: AbortSignal | undefined, err: unknown): boolean {
  return signal?.aborted === true || (err as { name?: string } | null)?.name === "AbortError";
}

/**
 * Streams entries -> PAX tar -> gzip, zstd or nothing -> `out`, computing the DiffID
 * of the tar and the digest and size of the blob in one pass. `out` is ended when the
 * layer is complete (and destroyed on failure). gzip is a series of members of
 * GZIP_MEMBER_BYTES of tar each (layer-gzip.ts), zstd a series of frames of
 * ZSTD_FRAME_BYTES (layer-zstd.ts), each compressed in parallel; the cuts are at
 * fixed offsets and the headers carry no name and no mtime, so equal entries give
 * equal digests on any machine and any thread count.
 */
export async function writeLayer(
  entries: LayerEntries,
  out: NodeJS.WritableStream,
  opts: LayerWriteOptions = {},
): Promise<WrittenLayer> {
  const compression = opts.compression ?? "gzip";
  const level = opts.compressionLevel ?? defaultLevel(compression);
  checkLevel(compression, level);
  const { signal } = opts;
  checkAborted(signal, "writing the layer");
  const onTar = opts.onTar;
  const tarHash = new HashingStream("sha256", onTar && ((hex, size) => onTar({ diffId: `sha256:${hex}` as DiffID, size })));
  const blobHash = compression === "uncompressed" ? tarHash : new HashingStream();
  const source = Readable.from(tarChunks(entries, { sourceDateEpoch: opts.sourceDateEpoch, signal }), { objectMode: false });
  const popts = signal ? { signal } : {};
  const compress = compressionStage(compression, level);
  try {
    if (compress === undefined) await pipeline(source, tarHash, out, popts);
    else await pipeline(source, tarHash, compress, blobHash, out, popts);
  } catch (err) {
    if (aborted(signal, err)) throw new OcibuildError("ABORTED", "writing the layer was interrupted", { cause: signal?.reason ?? err });
    if (isOcibuildError(err)) throw err;
    throw new OcibuildError("LAYER_WRITE_FAILED", `writing the layer failed: ${(err as Error).message}`, { cause: err });
  }
  return {
    mediaType: layerMediaType(compression),
    digest: `sha256:${blobHash.hexDigest}` as Digest,
    diffId: `sha256:${tarHash.hexDigest}` as DiffID,
    size: blobHash.size,
    uncompressedSize: tarHash.size,
  };
}

/**
 * Writes the layer to a temp file in `dir` (created if missing), then renames it to
 * `dir/<hex of digest>`. On failure or abort the temp file is removed: nothing
 * half-written is left behind.
 */
export async function writeLayerToDir(
  entries: LayerEntries,
  dir: string,
  opts: LayerWriteOptions = {},
): Promise<WrittenLayer & { path: string }> {
  checkAborted(opts.signal, "writing the layer");
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.tmp-layer-${randomBytes(8).toString("hex")}`);
  const file = createWriteStream(tmp, { flags: "wx" });
  try {
    const written = await writeLayer(entries, file, opts);
    const path = join(dir, written.digest.slice("sha256:".length));
    await rename(tmp, path);
    return { ...written, path };
  } catch (err) {
    await removeTemp(file, tmp);
    throw err;
  }
}

/**
 * Internal (not for src/index.ts). Removes a temp file once its write stream is closed: a stream destroyed while
 * its open() is still pending would otherwise create the file after the rm.
 */
export async function removeTemp(stream: NodeJS.WritableStream & { closed?: boolean; destroy?: () => void }, path: string): Promise<void> {
  if (stream.closed !== true) {
    const closed = new Promise<void>((resolve) => stream.once("close", () => resolve()));
    stream.destroy?.();
    await closed;
  }
  // Clean-up after a failure must not replace it with its own (ENOTDIR under a file, EROFS).
  await rm(path, { force: true }).catch(() => {});
}
