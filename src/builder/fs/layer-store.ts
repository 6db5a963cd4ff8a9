/**
 * The layer store: each layer extracted once, on its own, in overlay form, keyed
 * by DiffID, ready to be an overlayfs lowerdir; and the OCI ChainID of a stack.
 */
import { createHash, randomBytes } from "node:crypto";
import { lstatSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { DiffID } from "../../oci/digest.js";
import { hexOf } from "../../oci/digest.js";
import { OcibuildError } from "../../errors.js";
import { extractLayer } from "./extract.js";
import { lstatOrNull } from "./util.js";

/**
 * ChainIDs already computed in a build: the chain so far, then the next layer's DiffID,
 * to the chain with it. Looked up by strings the build holds already (their hashes are
 * kept), not by a concatenation made again for every layer of every step's stack: a
 * 50-step cached rebuild spent ~0.6 ms on those.
 */
export type ChainMemo = Map<string, Map<string, string>>;

/** OCI ChainID of a stack of layers (bottom first). */
export function chainId(diffIds: DiffID[], memo?: ChainMemo): string {
  if (diffIds.length === 0) throw new OcibuildError("ROOTFS_EMPTY_CHAIN", "a chain ID needs at least one layer");
  let chain: string = diffIds[0]!;
  for (let i = 1; i < diffIds.length; i++) {
    const d = diffIds[i]!;
    let after = memo?.get(chain);
    let next = after?.get(d);
    if (next === undefined) {
      next = `sha256:${createHash("sha256").update(`${chain} ${d}`).digest("hex")}`;
      if (memo) {
        if (!after) memo.set(chain, (after = new Map()));
        after.set(d, next);
      }
    }
    chain = next;
  }
  return chain;
}

/**
 * A content-addressed store of extracted layers, each on its own in overlay form
 * (whiteouts as char 0/0, opaque dirs as the overlay xattr), ready to be an
 * overlayfs lowerdir. A stage root is the overlay of its layers' directories.
 * Extraction goes to a temp dir and is renamed into place: a reader never sees a
 * half-extracted layer, and two processes racing for the same layer both end up
 * using the one that was renamed first.
 */
export class LayerStore {
  /** Layers being made ready through this store (in this build), per DiffID. */
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(readonly dir: string) {}

  /**
   * `ready()` for this DiffID, once at a time: callers asking while it runs share
   * its promise. Stages running in parallel on the same base ask for the same layers
   * at the same moment and so share one download and one extraction. Once settled
   * the layer is in the store (or, after a failure, the next caller tries again).
   */
  once(diffId: DiffID, ready: () => Promise<string>): Promise<string> {
    let p = this.inFlight.get(diffId);
    if (p === undefined) {
      p = ready();
      this.inFlight.set(diffId, p);
      const done = () => this.inFlight.delete(diffId);
      p.then(done, done);
    }
    return p;
  }

  /** Where the layer with this DiffID lives (whether or not it is there yet). */
  layerDir(diffId: DiffID): string {
    return join(this.dir, "layers", hexOf(diffId));
  }

  async has(diffId: DiffID): Promise<boolean> {
    return (await lstatOrNull(this.layerDir(diffId)))?.isDirectory() ?? false;
  }

  /** has(), with one blocking lstat: no thread-pool round trip, which waits behind a layer's gzip. */
  hasNow(diffId: DiffID): boolean {
    return lstatSync(this.layerDir(diffId), { throwIfNoEntry: false })?.isDirectory() ?? false;
  }

  async ensureLayer(
    diffId: DiffID,
    openLayer: (signal?: AbortSignal) => Promise<NodeJS.ReadableStream>,
    opts: {
      mediaType?: string;
      signal?: AbortSignal;
      onWarning?: (msg: string) => void;
      /** Most bytes the layer may decompress to (LAYER_TOO_LARGE beyond), and its name (digest) for the message. */
      maxSize?: number;
      layer?: string;
      /** Awaited after extraction, before the layer is moved into place; a rejection discards it. */
      beforeCommit?: () => Promise<void>;
    } = {},
  ): Promise<string> {
    const final = this.layerDir(diffId);
    if (await this.has(diffId)) return final;
    const tmpRoot = join(this.dir, "tmp");
    // Private (0700): extracted layers keep their setuid files and device nodes.
    await mkdir(tmpRoot, { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "layers"), { recursive: true, mode: 0o700 });
    const tmp = join(tmpRoot, `${hexOf(diffId).slice(0, 16)}-${randomBytes(6).toString("hex")}`);
    await mkdir(tmp, { mode: 0o755 });
    try {
      const stream = await openLayer(opts.signal);
      const { beforeCommit, ...extractOpts } = opts;
      await extractLayer(tmp, stream, { ...extractOpts, diffId, whiteouts: "overlay" });
      await beforeCommit?.();
      try {
        await rename(tmp, final);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
        // Another process finished first: use its copy.
        await rm(tmp, { recursive: true, force: true });
      }
      return final;
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }
}
