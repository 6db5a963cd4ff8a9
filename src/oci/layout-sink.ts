/**
 * The OCI layout sink: an image or an index (image.ts) written into an OCI image
 * layout directory, created if need be. Every blob once, in parallel with a bound
 * (a blob the layout already has is kept), each manifest after what it names, the
 * top manifest or index last, then its entry in index.json (named `tag`). Each file
 * is written to a temp name and renamed (OciLayout), so an existing layout is never
 * seen half-updated; with `beside`, a directory that does not exist yet is written
 * as a whole beside it and renamed into place, so a failed write leaves nothing.
 */
import { rename, stat } from "node:fs/promises";
import pLimit, { type LimitFunction } from "p-limit";
import { OcibuildError } from "../errors.js";
import { removeQuietly } from "../user-path.js";
import type { Digest } from "./digest.js";
import { type Artifact, type ImageBlob, isForeign, settleAll } from "./image.js";
import { OciLayout } from "./layout.js";
import { type Blob, type Descriptor, descriptorOf } from "./manifest.js";

export interface LayoutWriteOptions {
  /** The name of the top manifest or index in index.json (org.opencontainers.image.ref.name). */
  tag?: string;
  /** Annotations of the top manifest's or index's entry in index.json (BuildKit's index-descriptor level). */
  annotations?: Record<string, string>;
  /** Write a directory that does not exist yet beside it, then rename it into place. */
  beside?: boolean;
  /** Bounds parallel blob writes (default: 4 at a time). */
  limit?: LimitFunction;
  signal?: AbortSignal;
}

export interface LayoutWriteResult {
  /** The top manifest or index, as index.json names it (without the ref name). */
  descriptor: Descriptor;
  blobs: { uploaded: number; mounted: number; exists: number };
  manifests: number;
}

interface Writer {
  layout: OciLayout;
  limit: LimitFunction;
  jobs: Map<Digest, Promise<void>>;
  result: LayoutWriteResult;
  signal?: AbortSignal;
}

/** One blob into the layout. A source that reports its copy corrupt and retryable (a cached copy, removed; the blob's registry has it) is opened once more. */
async function writeBlob(w: Writer, b: ImageBlob): Promise<void> {
  const { digest, size } = b.descriptor;
  if (await w.layout.hasBlob(digest)) {
    w.result.blobs.exists++;
    return;
  }
  for (let attempt = 1; ; attempt++) {
    try {
      // Every source's stream checks its own bytes against the digest as it flows.
      await w.layout.writeBlob(await b.open(w.signal), { digest, size }, w.signal, { sourceVerified: true });
      w.result.blobs.uploaded++;
      return;
    } catch (e) {
      if (attempt > 1 || !(e instanceof OcibuildError && e.code === "LAYOUT_BLOB_CORRUPT" && e.retryable)) throw e;
    }
  }
}

function blobOnce(w: Writer, b: ImageBlob): Promise<void> {
  let job = w.jobs.get(b.descriptor.digest);
  if (!job) {
    job = w.limit(() => writeBlob(w, b));
    w.jobs.set(b.descriptor.digest, job);
  }
  return job;
}

async function putManifest(w: Writer, m: Blob): Promise<void> {
  await w.layout.writeBlob(m.bytes, { digest: m.digest, size: m.bytes.length }, w.signal);
  w.result.manifests++;
}

/** Everything `a` names, then `a` itself. */
async function writeTree(w: Writer, a: Artifact): Promise<void> {
  if (a.kind === "image") await settleAll(a.blobs.filter((b) => !isForeign(b.descriptor)), (b) => blobOnce(w, b));
  else await settleAll(a.entries, async (e) => writeTree(w, await e.open(w.signal)));
  await putManifest(w, a.manifest);
}

/** Write `a` into the OCI layout `dir`. Errors are the layout's own (LAYOUT_*), the source's, or ABORTED. */
export async function writeLayout(a: Artifact, dir: string, opts: LayoutWriteOptions = {}): Promise<LayoutWriteResult> {
  const exists = !opts.beside || (await stat(dir).then(() => true, () => false));
  const target = exists ? dir : `${dir}.ocibuild-tmp-${process.pid}-${Date.now()}`;
  try {
    const layout = await OciLayout.create(target, opts.signal);
    const descriptor = descriptorOf(a.manifest);
    const result: LayoutWriteResult = { descriptor, blobs: { uploaded: 0, mounted: 0, exists: 0 }, manifests: 0 };
    await writeTree({ layout, limit: opts.limit ?? pLimit(4), jobs: new Map(), result, signal: opts.signal }, a);
    await layout.addManifest(opts.annotations ? { ...descriptor, annotations: opts.annotations } : descriptor, opts.tag, opts.signal);
    if (!exists) await rename(target, dir);
    return result;
  } catch (e) {
    if (!exists) await removeQuietly(target, { recursive: true });
    throw e;
  }
}
