/**
 * The parallel half of the layer writer's compression, shared by gzip members
 * (layer-gzip.ts) and zstd frames (layer-zstd.ts): the uncompressed stream is cut
 * into fixed-size pieces, each piece is compressed on its own (off the main thread),
 * a few at once, and the results are written in order. The cut points are fixed
 * offsets, never where a read or a thread happened to end, so the output depends
 * only on the input and on what `start` does with each piece.
 */

/** One piece being compressed: its output once done; `cancel` stops it when the stream is given up. */
export interface PieceJob {
  done: Promise<Buffer[]>;
  cancel(): void;
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

/**
 * A piece whose compression starts before the piece is complete: `write` is given its
 * bytes in order as they arrive (each call the bytes right after the previous one's),
 * `finish` the whole piece once it is (or the input's end), and returns its job. The
 * piece's output must not depend on how its bytes were split between the calls.
 * `cancel` drops it before `finish` (on error or abort).
 */
export interface PieceFeed {
  write(bytes: Buffer): void;
  finish(whole: Buffer): PieceJob;
  cancel(): void;
}

/**
 * Bytes gathered before a feed is first written to (each write is a trip to the
 * compressor's thread and back): a small layer's compression starts after its first
 * 64 KiB of tar, overlapping the rest of its walk and reads, instead of after all of it.
 * Each later write of the same piece waits for twice as much, up to FEED_MAX_BYTES: a
 * 4 MiB piece is 7 writes, not 64. Each write costs the threads ~70 us besides the
 * deflate itself (level 6 over x1's 100 MB tar: 373 ms of CPU fed by 64 KiB, 322 by
 * 1 MiB, medians of 7), and the bytes are the same either way.
 */
const FEED_BYTES = 64 * 1024;
const FEED_MAX_BYTES = 1024 * 1024;

interface Slot {
  job: PieceJob;
  /** Set once compressed. */
  out?: Buffer[];
}

/**
 * A pipeline stage (stream/promises pipeline accepts it between streams): bytes in,
 * each `pieceBytes` of them compressed by `start`, outputs in order, at most
 * `inFlight` pieces being compressed at once. A finished piece is passed on as soon
 * as every piece before it has been; the source is not read further while the window
 * is full (backpressure). Input buffers are reused once their piece is compressed
 * (`start` must be done reading its input when `done` settles), so a long layer
 * allocates about inFlight + 1 of them. Empty input is one (empty) piece. On error
 * or abort the pieces in flight are cancelled.
 */
export function compressPieces(pieceBytes: number, inFlight: number, start: (input: Buffer) => PieceJob, open?: () => PieceFeed) {
  return async function* (source: AsyncIterable<Buffer>, opts?: { signal?: AbortSignal }): AsyncGenerator<Buffer> {
    const signal = opts?.signal;
    const queue: Slot[] = [];
    const free: Buffer[] = [];
    let pieces = 0;
    let stopped = false;
    /** The piece being filled, when `open` feeds it as it fills, and how much of it was written to the feed. */
    let feed: PieceFeed | undefined;
    let fed = 0;
    /** Bytes the feed's next write waits for. */
    let step = FEED_BYTES;
    const begin = (input: Buffer, whole: Buffer) => {
      const slot: Slot = { job: feed ? feed.finish(input) : start(input) };
      feed = undefined;
      fed = 0;
      step = FEED_BYTES;
      slot.job.done.then(
        (out) => {
          slot.out = out;
          // The compressor has read all of it: the buffer can take the next piece (unless we are tearing down).
          if (!stopped) free.push(whole);
        },
        () => {},
      );
      queue.push(slot);
      pieces++;
    };
    /** The oldest piece once compressed; it stays in the queue (to be cancelled on abort) until then. */
    const next = async () => {
      const out = await unlessAborted(queue[0]!.job.done, signal);
      queue.shift();
      return out;
    };
    let buf: Buffer = Buffer.allocUnsafe(pieceBytes);
    let fill = 0;
    try {
      for await (const chunk of source) {
        let off = 0;
        while (off < chunk.length) {
          if (fill === 0 && open) feed = open();
          const n = chunk.copy(buf, fill, off);
          off += n;
          fill += n;
          if (fill < pieceBytes) break;
          begin(buf, buf);
          buf = free.pop() ?? Buffer.allocUnsafe(pieceBytes);
          fill = 0;
          if (queue.length >= inFlight) yield* await next();
        }
        if (feed && fill - fed >= step) {
          feed.write(buf.subarray(fed, fill));
          fed = fill;
          step = Math.min(step * 2, FEED_MAX_BYTES);
        }
        // Pass on what is already compressed, in order, without waiting for the rest.
        while (queue[0]?.out !== undefined) yield* queue.shift()!.out!;
      }
      if (fill > 0 || pieces === 0) begin(buf.subarray(0, fill), buf);
      while (queue.length > 0) yield* await next();
    } finally {
      stopped = true;
      feed?.cancel();
      for (const s of queue) s.job.cancel();
    }
  };
}
