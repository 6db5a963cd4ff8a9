/**
 * Image archives as single tar files, written in one streaming pass to a temp
 * name and renamed into place (a failed or interrupted write leaves nothing):
 *
 * - `oci-archive:FILE`: a tar of an OCI image layout (oci-layout, index.json,
 *   blobs/sha256/...) holding one image or index of the image model (image.ts),
 *   what `skopeo inspect oci-archive:FILE` and buildx's `type=oci,dest=FILE` read
 *   and write. Blobs are the registry's bytes, so the manifest digest is the same as
 *   in a registry.
 *
 * The tar itself comes from layer.ts's deterministic PAX encoder (sorted,
 * fixed owners and times), so the same image always gives the same archive.
 */
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OcibuildError } from "../errors.js";
import { pathError } from "../user-path.js";
import { type Artifact, isForeign } from "./image.js";
import { type LayerEntry, checkAborted, removeTemp, tarChunks } from "./layer.js";
import { REF_NAME_ANNOTATION } from "./layout.js";
import { type Blob, type ImageIndex, descriptorOf, type Descriptor } from "./manifest.js";
import { MediaType } from "./media-types.js";

const EPOCH = new Date(0);

/** A directory entry for an archive (root-owned, 0755, time 0). */
export function dirEntry(path: string): LayerEntry {
  return { path, type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: EPOCH };
}

/** A regular-file entry for an archive whose content comes from `open` (or fixed bytes). */
export function fileEntry(path: string, size: number, open: Uint8Array | ((signal?: AbortSignal) => Promise<NodeJS.ReadableStream> | NodeJS.ReadableStream)): LayerEntry {
  const opener = open instanceof Uint8Array ? () => Readable.from([Buffer.from(open)]) : open;
  return { path, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: EPOCH, size, open: opener };
}

/**
 * Streams `entries` as a tar to `path`: written to a temp file beside it, renamed
 * into place when complete; on failure or abort the temp file is removed.
 */
export async function writeTarFile(
  path: string,
  entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>,
  opts: { signal?: AbortSignal; what?: string } = {},
): Promise<void> {
  const what = opts.what ?? "archive";
  checkAborted(opts.signal, `writing the ${what}`);
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString("hex")}`);
  let file: ReturnType<typeof createWriteStream>;
  try {
    file = createWriteStream(tmp, { flags: "wx" });
  } catch (err) {
    throw pathError("OUTPUT_WRITE_FAILED", `cannot write the ${what}`, path, err);
  }
  try {
    await pipeline(Readable.from(tarChunks(entries, { signal: opts.signal })), file, opts.signal ? { signal: opts.signal } : {});
    await rename(tmp, path);
  } catch (err) {
    await removeTemp(file, tmp);
    if (opts.signal?.aborted) throw new OcibuildError("ABORTED", `writing the ${what} ${path} was interrupted`, { cause: opts.signal.reason });
    throw pathError("OUTPUT_WRITE_FAILED", `cannot write the ${what}`, path, err);
  }
}

function blobName(digest: string): string {
  const [alg, hex] = digest.split(":");
  return `blobs/${alg}/${hex}`;
}

/** Each blob under `a` (its blobs, its children's, its own manifest) as an archive entry, once per name. */
async function collectBlobs(a: Artifact, blobs: Map<string, LayerEntry>, signal?: AbortSignal): Promise<void> {
  if (a.kind === "image") {
    for (const b of a.blobs) {
      const name = blobName(b.descriptor.digest);
      if (!isForeign(b.descriptor) && !blobs.has(name)) blobs.set(name, fileEntry(name, b.descriptor.size, (s) => b.open(s)));
    }
  } else {
    for (const e of a.entries) await collectBlobs(await e.open(signal), blobs, signal);
  }
  const m: Blob = a.manifest;
  blobs.set(blobName(m.digest), fileEntry(blobName(m.digest), m.bytes.length, m.bytes));
}

/**
 * Writes `a` (an image, or an index with its images) as an OCI archive (a tar of an
 * OCI image layout) to `path`. With `tag`, the top manifest in index.json carries it
 * as org.opencontainers.image.ref.name.
 */
export async function writeOciArchive(path: string, a: Artifact, opts: { tag?: string; signal?: AbortSignal } = {}): Promise<Descriptor> {
  checkAborted(opts.signal, "writing the OCI archive");
  const plain = descriptorOf(a.manifest);
  const desc: Descriptor = opts.tag === undefined ? plain : { ...plain, annotations: { [REF_NAME_ANNOTATION]: opts.tag } };
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [desc] };
  const indexBytes = Buffer.from(`${JSON.stringify(index)}\n`);
  const layoutBytes = Buffer.from(`${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`);
  // Blobs sorted by name, each once (an image may repeat a layer, images of an index share blobs).
  const blobs = new Map<string, LayerEntry>();
  await collectBlobs(a, blobs, opts.signal);
  const algs = [...new Set([...blobs.keys()].map((n) => n.split("/")[1]!))].sort();
  const entries: LayerEntry[] = [
    dirEntry("blobs"),
    ...algs.flatMap((alg) => [dirEntry(`blobs/${alg}`), ...[...blobs.entries()].filter(([n]) => n.startsWith(`blobs/${alg}/`)).sort(([x], [y]) => (x < y ? -1 : 1)).map(([, e]) => e)]),
    fileEntry("index.json", indexBytes.length, indexBytes),
    fileEntry("oci-layout", layoutBytes.length, layoutBytes),
  ];
  await writeTarFile(path, entries, { signal: opts.signal, what: "OCI archive" });
  return plain;
}
