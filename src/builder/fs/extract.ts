/**
 * Root filesystems: applying OCI layer tars to a directory, safely.
 *
 * extractLayer() applies one layer to `root`, in one of two forms:
 *  - "apply" (default): a flattened rootfs; whiteouts delete what lower layers made.
 *  - "overlay": the layer on its own, as an overlayfs lowerdir: `.wh.name` becomes a
 *    char 0/0 device and `.wh..wh..opq` the overlay "opaque" xattr on its directory.
 *
 * The layer is hostile until proven otherwise: entry names with `..` or a leading
 * "/", hardlinks whose target is outside, and writes through a symlink that leaves
 * the root are refused with ROOTFS_UNSAFE_PATH, and nothing is written outside.
 *
 * This file reads the layer (decompression, DiffID hash, size limit, abort); each
 * entry is written by extractor.ts's Extractor, one method per entry type.
 */
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { DiffID } from "../../oci/digest.js";
import { OcibuildError } from "../../errors.js";
import { layerTooLarge } from "../../oci/layer-limit.js";
import { readTar, tarBytes } from "./tar-reader.js";
import { Extractor } from "./extractor.js";

export type WhiteoutForm = "apply" | "overlay";

export interface ExtractOptions {
  signal?: AbortSignal;
  onWarning?: (msg: string) => void;
  /** The layer's media type; compression is also sniffed from the magic bytes. */
  mediaType?: string;
  /**
   * The layer's DiffID: the uncompressed tar is hashed as it is read and a
   * mismatch fails with ROOTFS_DIFFID_MISMATCH (after extraction: extract into a
   * temp dir, as LayerStore does, when the result must not be used).
   */
  diffId?: DiffID;
  /** "apply" (default) deletes whited-out paths; "overlay" keeps whiteouts in overlayfs form. */
  whiteouts?: WhiteoutForm;
  /**
   * Ignore the archive's root entry ("./"): `root` keeps its own mode, owner and times.
   * For ADD of a local archive into a directory, as Docker's untar does.
   */
  skipRootEntry?: boolean;
  /** Own every entry by this instead of the archive's owners (ADD --chown, as BuildKit does since v0.23). */
  owner?: { uid: number; gid: number };
  /** Fail with LAYER_TOO_LARGE once the layer has decompressed to more than this many bytes. */
  maxSize?: number;
  /** The layer's name in messages (its digest, and for a base layer its image). */
  layer?: string;
}

/**
 * Extract one layer tar stream (gzip or plain; zstd where supported) into `root`,
 * applying the OCI rules. See the module comment for the two whiteout forms.
 *
 * The loop uses synchronous fs calls on purpose: each entry costs a handful of
 * small metadata calls, and a thread-pool round trip for each (the async API)
 * is what made extraction slow; decompression still runs off the main thread and
 * file bodies are still written chunk by chunk as they arrive (memory flat).
 * (Creating files on the thread pool, several at a time, was measured too: on two
 * cores it cost more CPU than it saved, and where creating inodes is slow the
 * kernel's own work does not spread over threads.)
 */
export async function extractLayer(root: string, tarStream: NodeJS.ReadableStream, opts: ExtractOptions = {}): Promise<void> {
  const { signal } = opts;
  signal?.throwIfAborted();

  let tarStreamBytes: Readable;
  try {
    tarStreamBytes = await tarBytes(tarStream, opts.mediaType);
  } catch (e) {
    if (e instanceof OcibuildError) throw e;
    throw new OcibuildError("ROOTFS_EXTRACT_FAILED", `cannot read the layer: ${(e as Error).message}`, { cause: e });
  }
  const onAbort = () => tarStreamBytes.destroy(new OcibuildError("ROOTFS_ABORTED", "layer extraction was aborted"));
  signal?.addEventListener("abort", onAbort, { once: true });
  const input = new TarInput(tarStreamBytes, opts);
  const extractor = new Extractor(root, opts);
  try {
    for await (const entry of readTar(input)) {
      signal?.throwIfAborted();
      await extractor.add(entry);
    }
    await input.drain(signal);
  } catch (e) {
    signal?.removeEventListener("abort", onAbort);
    tarStreamBytes.destroy();
    if (signal?.aborted) throw new OcibuildError("ROOTFS_ABORTED", "layer extraction was aborted", { cause: signal.reason });
    if (e instanceof OcibuildError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new OcibuildError("ROOTFS_EXTRACT_FAILED", `cannot extract layer into ${root}: ${(e as Error).message}`, {
      cause: e,
      details: code ? { errno: code } : undefined,
    });
  }
  signal?.removeEventListener("abort", onAbort);
  input.checkDiffId();
  await extractor.finish();
}

/**
 * The layer's tar bytes as the tar reader pulls them. Every byte passes through
 * here: hashed for the DiffID check, and drained to the end after the archive's end
 * marker so a damaged gzip trailer is noticed. Counted too, against maxSize: a small
 * compressed layer can expand without end.
 */
class TarInput implements AsyncIterable<Buffer> {
  private readonly hash;
  private readonly source: AsyncIterator<Buffer>;
  private size = 0;

  constructor(
    stream: Readable,
    private readonly opts: ExtractOptions,
  ) {
    this.hash = opts.diffId !== undefined ? createHash("sha256") : undefined;
    this.source = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return { next: () => this.pull() };
  }

  private async pull(): Promise<IteratorResult<Buffer>> {
    const r = await this.source.next();
    if (r.done) return r;
    this.hash?.update(r.value);
    this.size += r.value.length;
    const { maxSize } = this.opts;
    if (maxSize !== undefined && this.size > maxSize) throw layerTooLarge(this.opts.layer ?? this.opts.diffId ?? "(unnamed)", maxSize);
    return r;
  }

  /** Reads what follows the archive's end marker. */
  async drain(signal?: AbortSignal): Promise<void> {
    while (!(await this.pull()).done) signal?.throwIfAborted();
  }

  /** Fails with ROOTFS_DIFFID_MISMATCH when the bytes read are not the layer's DiffID. */
  checkDiffId(): void {
    if (this.hash === undefined) return;
    const { diffId, layer } = this.opts;
    const got = `sha256:${this.hash.digest("hex")}`;
    if (got === diffId) return;
    throw new OcibuildError("ROOTFS_DIFFID_MISMATCH", `the layer${layer ? ` ${layer}` : ""} decompresses to ${got}, but its DiffID says ${diffId}`, {
      details: { expected: diffId, actual: got, ...(layer ? { layer } : {}) },
      hint: "the blob is corrupt or does not belong to this image",
    });
  }
}
