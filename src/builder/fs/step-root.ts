/**
 * Filesystem access for steps: a stage's layers as overlay lowerdirs, a writable
 * merged root whose change becomes the step's layer, and a read-only view for
 * COPY --from. Base layers are pulled once into the content store and extracted
 * once per DiffID into the layer store.
 */
import { mkdirSync, mkdtempSync, renameSync, rmdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { parseReference } from "../../oci/reference.js";
import type { LayerEntry, TarSegment } from "../../oci/layer.js";
import { settleAll } from "../../oci/image.js";
import { MediaType } from "../../oci/media-types.js";
import { checkedBlob, layerName, needsDiffIdCheck } from "./base-layers.js";
import { type MountedRoot, mountRoot } from "./overlay.js";
import { snapshotBatches } from "./snapshot.js";
import { pruneExcluded } from "./upper-prune.js";
import { deferredLayer, type LayerRecord, type StageState } from "../stage-state.js";
import type { DiffID } from "../../oci/digest.js";
import type { Descriptor } from "../../oci/manifest.js";
import type { StepContext } from "../step-context.js";

/**
 * Make sure a layer's compressed blob is in the content store (pulling a base layer
 * once). A base blob stored without being extracted is decompressed on its way in and
 * kept only if it matches its DiffID (see base-layers.ts).
 */
export async function ensureBlob(layer: LayerRecord, ctx: StepContext): Promise<void> {
  if (await ctx.content.hasBlob(layer.descriptor.digest, ctx.signal)) return;
  if (layer.source.kind !== "registry") {
    throw new OcibuildError("BUILD_LAYER_MISSING", `layer ${layer.descriptor.digest} is missing from the content store ${ctx.content.dir}`);
  }
  const ref = parseReference(layer.source.ref);
  const check = await needsDiffIdCheck(layer, ctx.diffIds);
  const body = await ctx.registry.getBlob(ref, layer.descriptor.digest, { size: layer.descriptor.size, signal: ctx.signal });
  const stream = check ? checkedBlob(layer, body, ctx.diffIds!, ctx.maxLayerSize) : body;
  // The registry's stream verifies the digest (it fails instead of ending on a mismatch): not hashed twice.
  await ctx.content.writeBlob(stream, { digest: layer.descriptor.digest, size: layer.descriptor.size }, ctx.signal, { sourceVerified: true });
}

/**
 * A base layer that is neither in the content store nor extracted: download it once
 * and feed the bytes to the content store and to the extractor at the same time.
 * The registry stream verifies the digest (it fails instead of ending on a mismatch,
 * so writeBlob keeps the blob only when it matched); the extracted directory is only
 * moved into the layer store once the blob is verified and stored.
 */
async function pullAndExtract(layer: LayerRecord, ctx: StepContext, onWarning: (m: string) => void): Promise<string> {
  const ref = parseReference((layer.source as { ref: string }).ref);
  const { digest, size } = layer.descriptor;
  const body = (await ctx.registry.getBlob(ref, digest, { size, signal: ctx.signal })) as Readable;
  const toStore = new PassThrough();
  const toExtract = new PassThrough();
  // Any failure on one side stops the other: the source is shared, and a side that
  // stopped reading would otherwise hold the other back forever.
  let firstError: Error | undefined;
  const fail = (err: Error) => {
    firstError ??= err;
    body.destroy(err);
    toStore.destroy(err);
    toExtract.destroy(err);
  };
  body.on("error", fail);
  // Errors reach the caller through the two promises below; a side that already
  // finished has no reader left to hear its stream being destroyed.
  toStore.on("error", () => {});
  toExtract.on("error", () => {});
  body.pipe(toStore);
  body.pipe(toExtract);
  // toStore ends only when the body does, which it does only once the digest matched.
  const stored = ctx.content.writeBlob(toStore, { digest, size }, ctx.signal, { sourceVerified: true });
  stored.catch((e: unknown) => fail(e instanceof Error ? e : new Error(String(e))));
  try {
    const dir = await ctx.layerStore.ensureLayer(layer.diffId, async () => toExtract, extractOptions(layer, ctx, onWarning, () => stored));
    // Another build may have put the layer in place first, leaving this side unread.
    toExtract.resume();
    await stored;
    return dir;
  } catch (e) {
    fail(e instanceof Error ? e : new Error(String(e)));
    await stored.catch(() => undefined);
    // The first failure is the cause; the other side only saw its stream cut off.
    throw firstError ?? e;
  }
}

/** The stage's layers as single-layer directories, bottom first (its base's made ready first: ctx.beforeRoot). */
export async function lowerDirs(state: StageState, ctx: StepContext): Promise<string[]> {
  await ctx.beforeRoot?.(state);
  const dirs: string[] = [];
  for (const layer of state.layers) dirs.push(layer.dir ?? (await layerDir(layer, ctx)));
  return dirs;
}

/** Whether every one of `layers` is extracted in the layer store (a root over them needs no pull). */
export async function layersExtracted(layers: readonly LayerRecord[], ctx: Pick<StepContext, "layerStore">): Promise<boolean> {
  for (const layer of layers) if (layer.dir === undefined && !(await ctx.layerStore.has(layer.diffId))) return false;
  return true;
}

/**
 * Make `layers` (a stage's base) ready in the layer store, all at once: downloads in
 * parallel, each once per build however many stages ask. Returns the compressed bytes
 * this call found neither extracted nor in the content store, so fetched them.
 */
export async function readyLayers(layers: readonly LayerRecord[], ctx: StepContext): Promise<number> {
  let fetched = 0;
  await settleAll(layers, async (layer) => {
    if (layer.dir !== undefined) return;
    if (!(await ctx.layerStore.has(layer.diffId)) && !(await ctx.content.hasBlob(layer.descriptor.digest, ctx.signal))) fetched += layer.descriptor.size;
    await layerDir(layer, ctx);
  });
  return fetched;
}

/**
 * The layer's directory in the layer store, pulled and extracted if need be; one
 * download and extraction per DiffID however many stages ask at once (LayerStore.once).
 */
async function layerDir(layer: LayerRecord, ctx: StepContext): Promise<string> {
  // A step's layer whose blob is still being written (LayerRecord.written) and which kept
  // no directory (copy mode, fuse-overlayfs) is extracted from that blob once it is there.
  await layer.written;
  // Extracted, its blob stored: what readyLayer would find, told by two blocking calls (its
  // thread-pool round trips waited behind the last step's gzip: 2-12 ms of a RUN's start).
  if (ctx.layerStore.hasNow(layer.diffId) && ctx.content.hasBlobNow(layer.descriptor.digest)) return ctx.layerStore.layerDir(layer.diffId);
  return ctx.layerStore.once(layer.diffId, () => readyLayer(layer, ctx));
}

async function readyLayer(layer: LayerRecord, ctx: StepContext): Promise<string> {
  const onWarning = (m: string) => ctx.emit({ type: "log", level: "warn", message: m });
  if (
    layer.source.kind === "registry" &&
    !(await ctx.layerStore.has(layer.diffId)) &&
    !(await ctx.content.hasBlob(layer.descriptor.digest, ctx.signal))
  ) {
    return pullAndExtract(layer, ctx, onWarning);
  }
  await ensureBlob(layer, ctx);
  return ctx.layerStore.ensureLayer(layer.diffId, async (signal) => ctx.content.readBlob(layer.descriptor.digest, signal), extractOptions(layer, ctx, onWarning));
}

/**
 * How a layer is extracted into the layer store. Once extracted its DiffID matched,
 * so a registry layer's blob is recorded as checked (see base-layers.ts), after
 * `stored` (the blob's own write, when it is downloaded at the same time).
 */
function extractOptions(layer: LayerRecord, ctx: StepContext, onWarning: (m: string) => void, stored?: () => Promise<unknown>) {
  return {
    mediaType: layer.descriptor.mediaType,
    signal: ctx.signal,
    onWarning,
    maxSize: ctx.maxLayerSize,
    layer: layerName(layer),
    beforeCommit: async () => {
      await stored?.();
      if (layer.source.kind === "registry") await ctx.diffIds?.set(layer.descriptor.digest, layer.diffId);
    },
  };
}

export interface MutationResult {
  /** Root-relative paths to leave out of the layer (mount points made for the step). */
  exclude?: string[];
}

/**
 * Run `fn` on a writable merged root of the stage and turn what it changed into a
 * layer. Returns the new layer, or undefined when nothing changed (BuildKit also
 * drops empty layers; the history entry is then marked empty_layer).
 *
 * With ctx.deferLayerBlobs, the layer comes back as soon as its tar is made and
 * hashed (its DiffID known, its directory in the layer store, the root unmounted),
 * while its blob is still being compressed and written (LayerRecord.written): the
 * next step runs meanwhile, on the other core. It is what BuildKit gets from making
 * blobs only at export.
 */
export async function mutateRoot(
  state: StageState,
  ctx: StepContext,
  fn: (merged: string) => Promise<MutationResult | void>,
): Promise<LayerRecord | undefined> {
  const lowers = await lowerDirs(state, ctx);
  mkdirSync(ctx.scratchDir, { recursive: true });
  const scratch = mkdtempSync(join(ctx.scratchDir, "step-"));
  try {
    const mounted = await mountRoot(lowers, scratch, {
      signal: ctx.signal,
      forceCopy: ctx.forceCopySnapshots,
      onLog: (m) => ctx.emit({ type: "log", level: "info", message: m }),
    });
    try {
      const exclude = (await fn(mounted.merged))?.exclude ?? [];
      const writing = await startLayerWrite(mounted, lowers, exclude, ctx);
      if (writing === undefined) return undefined;
      let tar: { diffId: DiffID };
      let dir: string | undefined;
      try {
        // The root is unmounted once nothing more is read in it, while the layer is still being
        // packed, hashed and compressed: 100,000 new files took ~230-270 ms to unmount.
        const unmounted = writing.read.then((changes) => mounted.unmount({ small: changes <= SMALL_CHANGE }));
        unmounted.catch(() => {});
        tar = await writing.tar;
        await unmounted;
        dir = keepUpper(mounted, exclude, tar.diffId, ctx);
      } catch (e) {
        // Nothing is left writing behind a failed step.
        await writing.blob.catch(() => {});
        throw e;
      }
      if (ctx.deferLayerBlobs) return deferredLayer(tar.diffId, dir, writing.blob);
      return { descriptor: await writing.blob, diffId: tar.diffId, source: { kind: "local" }, dir };
    } finally {
      await mounted.unmount();
    }
  } finally {
    if (!removeEmptied(scratch)) await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Removes a step's scratch directory with blocking calls when all it still holds is
 * the empty mount point (an overlay step whose upper directory became its layer):
 * the async recursive rm is a thread-pool round trip per call, slow while the layer's
 * gzip runs on the other core. False when anything else is there (a copy-mode root, a
 * failed step's upper directory), for the caller's rm.
 */
function removeEmptied(scratch: string): boolean {
  try {
    rmdirSync(join(scratch, "merged"));
    rmdirSync(scratch);
    return true;
  } catch {
    return false;
  }
}

/** Entries a layer may have for its root to be unmounted on the main thread (MountedRoot.unmount). */
const SMALL_CHANGE = 2000;

/**
 * The layer of what changed under `mounted`, begun: `read` resolves, with the number of
 * changes, once nothing more is read in the merged tree (SnapshotOptions.onMergedDone;
 * at the latest once every change is read), `tar` once all is packed and hashed (the
 * DiffID), `blob` once the compressed blob is in the content store. Undefined when
 * nothing changed (a RUN that wrote nothing, a WORKDIR that exists): no layer, and none
 * is written only to be dropped.
 */
async function startLayerWrite(
  mounted: MountedRoot,
  lowers: string[],
  exclude: string[],
  ctx: StepContext,
): Promise<{ tar: Promise<{ diffId: DiffID }>; read: Promise<number>; blob: Promise<Descriptor> } | undefined> {
  // Bytes going into the layer (uncompressed), reported about every 4 MiB for the live view.
  let bytes = 0;
  let count = 0;
  let reported = 0;
  const cur = ctx.current;
  let allRead!: (changes: number) => void;
  const read = new Promise<number>((resolve) => (allRead = resolve));
  const pack = { sourceDateEpoch: ctx.sourceDateEpoch };
  const changes = snapshotBatches(mounted, lowers, { exclude, signal: ctx.signal, onMergedDone: allRead, pack })[Symbol.asyncIterator]();
  const first = await changes.next();
  if (first.done) return undefined;
  const entries = (async function* () {
    for (let r: IteratorResult<(LayerEntry | TarSegment)[]> = first; !r.done; r = await changes.next()) {
      for (const e of r.value) {
        const segment = "tar" in e;
        bytes += segment ? e.contentBytes : (e.size ?? 0);
        count += segment ? e.entries : 1;
      }
      if (cur && bytes - reported >= 4 << 20) {
        reported = bytes;
        ctx.emit({ type: "layer-write", stage: cur.stage, step: cur.step, bytes, done: false });
      }
      yield r.value;
    }
    // The tar asks for the next entry once the last one is written: after the last, nothing more is read.
    allRead(count);
  })();
  let tarDone!: (t: { diffId: DiffID }) => void;
  const tarHashed = new Promise<{ diffId: DiffID }>((resolve) => (tarDone = resolve));
  const written = ctx.content.writeLayer(entries, {
    compression: ctx.compression,
    compressionLevel: ctx.compressionLevel,
    sourceDateEpoch: ctx.sourceDateEpoch,
    signal: ctx.signal,
    onTar: tarDone,
  });
  const blob = written.then((w): Descriptor => {
    if (cur) ctx.emit({ type: "layer-write", stage: cur.stage, step: cur.step, bytes, done: true, digest: w.digest });
    return { mediaType: w.mediaType, digest: w.digest, size: w.size };
  });
  // A write that fails before its tar is whole fails `tar` too.
  return { tar: Promise.race([tarHashed, blob.then(() => tarHashed)]), read, blob };
}

/** With overlay, the upperdir is the layer in overlay form: kept as its directory in the layer store (returned). */
function keepUpper(mounted: MountedRoot, exclude: string[], diffId: DiffID, ctx: StepContext): string | undefined {
  if (mounted.mode !== "overlay") return undefined;
  // Same rule as the snapshot: a mount point goes, unless something real was written below it.
  pruneExcluded(mounted.upper, exclude);
  const target = ctx.layerStore.layerDir(diffId);
  // Blocking calls, one syscall each: async ones waited 1-9 ms behind the layer's gzip on the thread pool.
  mkdirSync(join(ctx.layerStore.dir, "layers"), { recursive: true, mode: 0o700 });
  try {
    renameSync(mounted.upper, target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
  }
  return target;
}

/** Run `fn` with a merged view of the stage's filesystem (for reading: COPY --from). */
export async function withRootView<T>(state: StageState, ctx: StepContext, fn: (root: string) => Promise<T>): Promise<T> {
  const lowers = await lowerDirs(state, ctx);
  mkdirSync(ctx.scratchDir, { recursive: true });
  const scratch = mkdtempSync(join(ctx.scratchDir, "view-"));
  try {
    if (lowers.length === 0) {
      const empty = join(scratch, "empty");
      mkdirSync(empty);
      return await fn(empty);
    }
    const mounted = await mountRoot(lowers, scratch, { signal: ctx.signal, forceCopy: ctx.forceCopySnapshots });
    try {
      return await fn(mounted.merged);
    } finally {
      await mounted.unmount();
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
