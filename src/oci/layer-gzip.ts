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
import { type Gzip, createGzip, deflateRawSync } from "node:zlib";

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

/**
 * One gzip member of `input`, as zlib's output pieces. For levels 1-9 the output
 * buffer size does not change the bytes. At level 0 it does (stored blocks end
 * where the output buffer fills), so level 0 keeps zlib's default 16 KiB, the size
 * a plain createGzip({ level: 0 }) uses; fixed either way, so the bytes never
 * depend on the machine.
 */
function compressMember(input: Buffer, level: number): { done: Promise<Buffer[]>; gz: Gzip } {
  const gz = createGzip(level === 0 ? { level } : { level, chunkSize: OUTPUT_CHUNK });
  const parts: Buffer[] = [];
  const done = new Promise<Buffer[]>((resolve, reject) => {
    gz.on("data", (c: Buffer) => parts.push(c));
    gz.on("error", reject);
    gz.on("end", () => resolve(parts));
    gz.on("close", () => reject(new Error("gzip member closed before its end")));
  });
  // Never an unhandled rejection: a member that fails after the stream was given up is not waited for.
  done.catch(() => {});
  gz.end(input);
  return { done, gz };
}

/** Samples taken from a member to judge whether it compresses at all. */
const PROBE_SAMPLES = 8;
const PROBE_BYTES = 4096;
/** A sample is incompressible if level 1 leaves more than this share of it. */
const PROBE_RATIO = 0.97;

/**
 * Does this piece look incompressible (already compressed archives, media, random
 * data, many model weights)? Deflate spends its full effort on such bytes for
 * nothing: level 6 runs at ~25 MB/s on random data here and saves nothing, where
 * stored blocks cost a copy. Eight 4 KiB samples spread over the piece are
 * deflated at level 1 (about half a millisecond in all); only if every one stays
 * above 97% of its size is the piece stored (level 0). A piece with any
 * compressible sample is compressed as asked. The choice depends only on the bytes,
 * so the output stays a function of the input and the level. Pieces under 64 KiB
 * are always compressed as asked.
 */
export function looksIncompressible(piece: Buffer): boolean {
  if (piece.length < 64 * 1024) return false;
  const step = Math.floor((piece.length - PROBE_BYTES) / (PROBE_SAMPLES - 1));
  for (let i = 0; i < PROBE_SAMPLES; i++) {
    const off = i * step;
    const sample = piece.subarray(off, off + PROBE_BYTES);
    if (deflateRawSync(sample, { level: 1 }).length < sample.length * PROBE_RATIO) return false;
  }
  return true;
}

/** The level a member is compressed at: the one asked for, or 0 for a piece that does not compress. */
export function memberLevel(piece: Buffer, level: number): number {
  return level > 0 && looksIncompressible(piece) ? 0 : level;
}

/** `p`, or the signal's reason as soon as it aborts. */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

interface Member {
  gz: Gzip;
  done: Promise<Buffer[]>;
  /** Set once compressed. */
  out?: Buffer[];
}

/**
 * A pipeline stage (stream/promises pipeline accepts it between streams): bytes in,
 * gzip members out, in order, at most `inFlight` being compressed at once. A
 * finished member is passed on as soon as every member before it has been; the
 * source is not read further while the window is full (backpressure). Input
 * buffers are reused once their member is compressed, so a long layer allocates
 * about inFlight + 1 of them. On error or abort the members in flight are destroyed.
 */
export function gzipMembers(level: number, memberBytes = GZIP_MEMBER_BYTES, inFlight = MEMBERS_IN_FLIGHT) {
  return async function* (source: AsyncIterable<Buffer>, opts?: { signal?: AbortSignal }): AsyncGenerator<Buffer> {
    const signal = opts?.signal;
    const queue: Member[] = [];
    const free: Buffer[] = [];
    let members = 0;
    let stopped = false;
    const start = (input: Buffer, whole: Buffer) => {
      const m: Member = compressMember(input, memberLevel(input, level));
      m.done.then(
        (out) => {
          m.out = out;
          // zlib has read all of it: the buffer can take the next piece (unless we are tearing down).
          if (!stopped) free.push(whole);
        },
        () => {},
      );
      queue.push(m);
      members++;
    };
    /** The oldest member once compressed; it stays in the queue (to be destroyed on abort) until then. */
    const next = async () => {
      const out = await unlessAborted(queue[0]!.done, signal);
      queue.shift();
      return out;
    };
    let buf: Buffer = Buffer.allocUnsafe(memberBytes);
    let fill = 0;
    try {
      for await (const chunk of source) {
        let off = 0;
        while (off < chunk.length) {
          const n = chunk.copy(buf, fill, off);
          off += n;
          fill += n;
          if (fill < memberBytes) break;
          start(buf, buf);
          buf = free.pop() ?? Buffer.allocUnsafe(memberBytes);
          fill = 0;
          if (queue.length >= inFlight) yield* await next();
        }
        // Pass on what is already compressed, in order, without waiting for the rest.
        while (queue[0]?.out !== undefined) yield* queue.shift()!.out!;
      }
      if (fill > 0 || members === 0) start(buf.subarray(0, fill), buf);
      while (queue.length > 0) yield* await next();
    } finally {
      stopped = true;
      for (const m of queue) m.gz.destroy();
    }
  };
}
