/**
 * gzip for the layer writer, on more than one core: the uncompressed stream is cut
 * into fixed-size pieces, each compressed as its own gzip member (RFC 1952 section
 * 2.2: a gzip file is a series of members; gunzip, Go's compress/gzip, containerd,
 * skopeo, umoci and node:zlib read them all as one stream), and the members are
 * written in order. node:zlib compresses on libuv's threadpool, so the pieces in
 * flight are compressed in parallel, without worker threads.
 *
 * A piece that does not compress (see looksIncompressible) is stored, not deflated.
 *
 * The bytes depend only on the input and the level: the cut points are fixed
 * offsets, never where a read or a thread happened to end, and each member is
 * compressed from one whole buffer. Thread count and core count change the speed,
 * never the digest. Input shorter than one piece is a single member: at levels
 * 1-9, when it compresses, byte for byte what one plain createGzip({ level }) gives however the input
 * was written to it (zlib writes the same header either way: no name, mtime 0,
 * OS 3). At level 0 zlib ends stored blocks where its input or output buffer
 * ends, so a streaming createGzip's bytes follow the write sizes; a member's are
 * those of createGzip given the piece in one write.
 */
import type { Gzip } from "node:zlib";
import { zlib } from "../builtins.js";
import { compressPieces, type PieceFeed, type PieceJob } from "./layer-pieces.js";

/**
 * Uncompressed bytes per gzip member. Each member starts with an empty dictionary,
 * so every cut costs the matches that would have reached back across it, plus an
 * 18-byte header and trailer. Measured at level 6 on real files: see
 * DEFAULT_COMPRESSION_LEVEL in layer.ts.
 */
export const GZIP_MEMBER_BYTES = 4 * 1024 * 1024;

/**
 * Members compressing or finished but not yet written, at most. Memory is bounded by
 * about (MEMBERS_IN_FLIGHT + 1) x GZIP_MEMBER_BYTES of input plus their compressed
 * output. Three keeps two cores busy while the tar of the next piece is produced:
 * with two, one member compresses alone while the next is filled (level 6 on
 * binaries, same machine and hour: 29-34 MB/s with two, 44-51 with three or four).
 * Three also stays below libuv's default of four threads, so file reads for the
 * tar stream still find a free thread.
 */
export const MEMBERS_IN_FLIGHT = 3;

/**
 * zlib output buffer for levels 1-9: each fill is one threadpool task and one trip
 * back to the main thread. 256 KiB (about 0.7 MB of input at level 6, tens of ms)
 * measured faster than zlib's default 16 KiB (29-39 against 44-51 MB/s), and still
 * short enough that other threadpool work (file reads) queued behind it is not held
 * for a whole member.
 */
const OUTPUT_CHUNK = 256 * 1024;

/** zlib output buffer for a piece stored because it does not compress (see compressMember). */
const STORED_CHUNK = 1024 * 1024;

/**
 * One gzip member of `input`, as zlib's output pieces. For levels 1-9 the output
 * buffer size does not change the bytes. At level 0 it does (stored blocks end
 * where the output buffer fills), so level 0 keeps zlib's default 16 KiB, the size
 * a plain createGzip({ level: 0 }) uses; fixed either way, so the bytes never
 * depend on the machine.
 */
function compressMember(input: Buffer, level: number, stored: boolean): { done: Promise<Buffer[]>; gz: Gzip } {
  // A piece found incompressible is stored with one big output buffer: zlib's work per
  // buffer is then a copy, and 16 KiB buffers cost a threadpool round trip each
  // (~200 ms for 8 MiB; ~10 ms with 1 MiB buffers).
  const m = streamingMember(level, stored);
  m.gz.end(input);
  return m;
}

/** A gzip member to be written and ended by the caller (see compressMember for its options). */
function streamingMember(level: number, stored = false): { done: Promise<Buffer[]>; gz: Gzip } {
  const gz = zlib().createGzip(stored ? { level: 0, chunkSize: STORED_CHUNK } : level === 0 ? { level } : { level, chunkSize: OUTPUT_CHUNK });
  const parts: Buffer[] = [];
  const done = new Promise<Buffer[]>((resolve, reject) => {
    gz.on("data", (c: Buffer) => parts.push(c));
    gz.on("error", reject);
    gz.on("end", () => resolve(parts));
    gz.on("close", () => reject(new Error("gzip member closed before its end")));
  });
  // Never an unhandled rejection: a member that fails after the stream was given up is not waited for.
  done.catch(() => {});
  return { done, gz };
}

/** Samples taken from a piece to judge whether it compresses at all. */
const PROBE_SAMPLES = 32;
const PROBE_BYTES = 2048;
/**
 * Bits per byte above which a sample counts as incompressible: 2 KiB of random
 * bytes measure ~7.91 (the estimate runs low on short samples), compressed data the
 * same; text measures 4.5-5.5, machine code 5.5-6.5, zero padding 0. At 7.8 the
 * best a Huffman code could save on the sample is under 3%.
 */
const PROBE_BITS = 7.8;
/** Share of samples that must be incompressible for the piece to be stored. */
const PROBE_SHARE = 7 / 8;

/**
 * A byte value's share of a sample at or above which the sample's entropy is below
 * PROBE_BITS whatever the other bytes are: with one value at share p and the rest
 * spread evenly over the other 255, the entropy is at most
 * -p log2 p - (1-p) log2((1-p)/255), which falls as p grows past 1/256 and is 7.778 bits
 * at p = 0.075.
 */
const SURE_SPARSE_SHARE = 0.075;

/**
 * Whether a sample's byte entropy is above PROBE_BITS (as dense as random bytes). The
 * count stops at the first byte value to reach SURE_SPARSE_SHARE of the sample (a tar
 * header's zeros, text's spaces): such a sample is not dense, and the answer is the one
 * the whole histogram gives. For x1's 100 MB tar this check had cost ~40 ms of the
 * main thread (profiled).
 */
export function isDense(sample: Uint8Array, counts: Uint32Array): boolean {
  counts.fill(0);
  const sure = Math.ceil(sample.length * SURE_SPARSE_SHARE);
  for (let i = 0; i < sample.length; i++) if (++counts[sample[i]!]! >= sure) return false;
  return entropy(sample, counts) > PROBE_BITS;
}

/** Shannon entropy, in bits per byte, of the histogram `counts` of `sample`. */
function entropy(sample: Uint8Array, counts: Uint32Array): number {
  let h = 0;
  for (let b = 0; b < 256; b++) {
    const c = counts[b]!;
    if (c > 0) {
      const p = c / sample.length;
      h -= p * Math.log2(p);
    }
  }
  return h;
}

/**
 * Does this piece look incompressible (already compressed archives, media, random
 * data)? Deflate spends its full effort on such bytes for nothing: level 6 runs at
 * ~30 MB/s on random data here and saves nothing, where storing costs a copy
 * (4 MiB: 130-160 ms against 4-6 ms). Thirty-two 2 KiB samples spread over the
 * piece are measured (byte entropy, well under a millisecond); the piece is stored
 * only if at least 7 in 8 are above 7.8 bits per byte, so a tar header or padding
 * among the samples does not make a big random file compressible, and a piece with
 * a real compressible share is compressed as asked. The choice depends only on
 * the bytes, so the output stays a function of the input and the level. Pieces
 * under 64 KiB are always compressed as asked.
 */
export function looksIncompressible(piece: Uint8Array): boolean {
  if (piece.length < 64 * 1024) return false;
  const counts = new Uint32Array(256);
  const step = Math.floor((piece.length - PROBE_BYTES) / (PROBE_SAMPLES - 1));
  let dense = 0;
  for (let i = 0; i < PROBE_SAMPLES; i++) {
    const off = i * step;
    if (isDense(piece.subarray(off, off + PROBE_BYTES), counts)) dense++;
  }
  return dense >= PROBE_SAMPLES * PROBE_SHARE;
}

/**
 * A pipeline stage (stream/promises pipeline accepts it between streams): bytes in,
 * gzip members out, in order, at most `inFlight` being compressed at once (the
 * window, backpressure and buffer reuse are layer-pieces.ts's). On error or abort
 * the members in flight are destroyed.
 */
export function gzipMembers(level: number, memberBytes = GZIP_MEMBER_BYTES, inFlight = MEMBERS_IN_FLIGHT) {
  const start = (input: Buffer) => {
    const m = compressMember(input, level, level > 0 && looksIncompressible(input));
    return { done: m.done, cancel: () => m.gz.destroy() };
  };
  // Level 0's stored blocks end where its writes do: only levels 1-9 are fed as they fill.
  return compressPieces(memberBytes, inFlight, start, level > 0 ? () => memberFeed(level, start) : undefined);
}

/** Whether any of a few samples spread over `bytes` is as dense as incompressible data (see looksIncompressible). */
function anyDense(bytes: Uint8Array): boolean {
  const counts = new Uint32Array(256);
  const samples = Math.min(4, Math.floor(bytes.length / PROBE_BYTES));
  for (let i = 0; i < samples; i++) {
    const off = Math.floor((i * (bytes.length - PROBE_BYTES)) / Math.max(1, samples - 1));
    if (isDense(bytes.subarray(off, off + PROBE_BYTES), counts)) return true;
  }
  return false;
}

/**
 * A member deflated while its piece is still being filled: zlib's output at levels 1-9
 * does not depend on how its input was split between writes (one member, one stream,
 * no flush), so the bytes are those of compressMember on the whole piece. Whether the
 * piece is stored instead is still decided on the whole piece (looksIncompressible);
 * bytes are fed only while they look compressible, so an archive or a binary is not
 * deflated for nothing: from its first dense part on, the rest waits for that decision.
 */
function memberFeed(level: number, start: (input: Buffer) => PieceJob): PieceFeed {
  let m: ReturnType<typeof compressMember> | undefined;
  let fed = 0;
  let feeding = true;
  return {
    write(bytes) {
      if (!feeding) return;
      if (anyDense(bytes)) {
        feeding = false;
        return;
      }
      m ??= streamingMember(level);
      m.gz.write(bytes);
      fed += bytes.length;
    },
    finish(whole) {
      if (m === undefined) return start(whole);
      if (looksIncompressible(whole)) {
        m.gz.destroy();
        return start(whole);
      }
      m.gz.end(whole.subarray(fed));
      const gz = m.gz;
      return { done: m.done, cancel: () => gz.destroy() };
    },
    cancel() {
      m?.gz.destroy();
    },
  };
}
