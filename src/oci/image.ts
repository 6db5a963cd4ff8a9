/**
 * The image model, in go-containerregistry's spirit: read-only values that sources
 * produce lazily (a registry reference, an OCI layout, a build's finished stages:
 * oci/sources.ts, builder/stage-image.ts) and sinks consume (a registry:
 * registry/push.ts; an OCI layout: layout-sink.ts; oci-archive.ts; docker-archive.ts).
 *
 * - `ImageBlob`: a blob a manifest names (the config or a layer): its descriptor as
 *   the manifest has it, a way to open its bytes (the stream fails before its end
 *   when they are not the descriptor's), and a registry repository that holds it
 *   (a sink on the same registry mounts it from there instead of uploading it).
 * - `Layer`: a layer's blob and its DiffID (from the config).
 * - `Image`: the manifest as its exact bytes plus the parsed view; the config and the
 *   layers read on first ask (copying never parses the config: an artifact's config
 *   need not be an image config); the platform when the source knows it.
 * - `Index`: the index as its bytes plus the parsed view; each entry its descriptor
 *   (platform and annotations as written: attestation manifests are entries too)
 *   and the image or index it names, opened when asked.
 */
import { Readable } from "node:stream";
import { OcibuildError } from "../errors.js";
import { type DiffID, parseDiffID } from "./digest.js";
import { type AnyManifest, type Blob, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, parseImageConfig } from "./manifest.js";
import { MediaType } from "./media-types.js";
import { type Platform, selectPlatform } from "./platform.js";
import type { ImageReference } from "./reference.js";

export interface ImageBlob {
  readonly descriptor: Descriptor;
  /** The blob's bytes; the stream errors (DIGEST_MISMATCH or the store's own code) before its end when they are not the descriptor's. */
  open(signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
  /** A registry repository holding this blob, for cross-repository mounts. */
  readonly origin?: ImageReference;
}

export interface Layer extends ImageBlob {
  readonly diffId: DiffID;
}

export interface Image {
  readonly kind: "image";
  readonly manifest: Blob<ImageManifest>;
  /** The config blob, then each layer's, in manifest order: what a copy moves. */
  readonly blobs: readonly ImageBlob[];
  readonly platform?: Platform;
  /** The config's bytes and parsed view (read once, on the first call). */
  config(signal?: AbortSignal): Promise<Blob<ImageConfig>>;
  /** The layers with their DiffIDs (needs the config). */
  layers(signal?: AbortSignal): Promise<readonly Layer[]>;
}

export interface IndexEntry {
  /** As the index has it: digest, media type, platform, annotations. */
  readonly descriptor: Descriptor;
  open(signal?: AbortSignal): Promise<Image | Index>;
}

export interface Index {
  readonly kind: "index";
  readonly manifest: Blob<ImageIndex>;
  /** One per descriptor of `manifest.parsed.manifests`, in the same order. */
  readonly entries: readonly IndexEntry[];
}

/** What a reference names: one image, or an index of them. */
export type Artifact = Image | Index;

/** A blob whose bytes are in memory (a config the build assembled), under `descriptor` (its digest is of `bytes`). */
export function memoryBlob(descriptor: Descriptor, bytes: Uint8Array): ImageBlob {
  return { descriptor, open: async () => Readable.from([Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)]) };
}

/** How deep indexes may nest under the top one. */
const MAX_INDEX_DEPTH = 4;

/**
 * Where a source's child manifests and blobs are read from (a registry repository,
 * an OCI layout). Every read is verified against its descriptor.
 */
export interface BlobReader {
  /** The source as the user named it, for messages. */
  readonly name: string;
  /** The registry repository the blobs are in, when they are in one. */
  readonly origin?: ImageReference;
  manifest(desc: Descriptor, signal?: AbortSignal): Promise<AnyManifest>;
  open(desc: Descriptor, signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
  /** A small blob (a config) whole. */
  bytes(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
}

/** Run `fn` once at a time: concurrent callers share one attempt, a failed attempt is forgotten. */
function once<T>(fn: (signal?: AbortSignal) => Promise<T>): (signal?: AbortSignal) => Promise<T> {
  let pending: Promise<T> | undefined;
  return (signal) => {
    pending ??= fn(signal).catch((e: unknown) => {
      pending = undefined;
      throw e;
    });
    return pending;
  };
}

/** The layers of `manifest`, each blob given its DiffID from `config`. */
export function zipLayers(manifest: Blob<ImageManifest>, blobs: readonly ImageBlob[], config: ImageConfig, name: string): Layer[] {
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.parsed.layers.length) {
    throw new OcibuildError("MANIFEST_INVALID", `image ${name} has ${manifest.parsed.layers.length} layers but its config lists ${diffIds.length} diff IDs`);
  }
  return blobs.map((b, i) => ({ ...b, diffId: parseDiffID(diffIds[i]!) }));
}

/** The image `manifest` describes, its blobs read through `reader` when asked. */
export function readerImage(reader: BlobReader, manifest: Blob<ImageManifest>, platform?: Platform): Image {
  const blob = (descriptor: Descriptor): ImageBlob => ({ descriptor, origin: reader.origin, open: (signal) => reader.open(descriptor, signal) });
  const layerBlobs = manifest.parsed.layers.map(blob);
  const cd = manifest.parsed.config;
  const config = once(async (signal) => parseImageConfig(await reader.bytes(cd, signal), cd.mediaType));
  const layers = once(async (signal) => zipLayers(manifest, layerBlobs, (await config(signal)).parsed, reader.name));
  return { kind: "image", manifest, blobs: [blob(cd), ...layerBlobs], ...(platform ? { platform } : {}), config, layers };
}

/** The image or index `top` is; an index's children are read through `reader` when opened. */
export function readerArtifact(reader: BlobReader, top: AnyManifest, platform?: Platform, depth = 0): Artifact {
  if (top.kind === "manifest") return readerImage(reader, top.blob, platform);
  if (depth > MAX_INDEX_DEPTH) throw new OcibuildError("MANIFEST_INVALID", `${reader.name} nests indexes too deeply`);
  const entries = top.blob.parsed.manifests.map(
    (descriptor): IndexEntry => ({
      descriptor,
      open: async (signal) => readerArtifact(reader, await reader.manifest(descriptor, signal), descriptor.platform, depth + 1),
    }),
  );
  return { kind: "index", manifest: top.blob, entries };
}

/** The entry of `index` for `platform` (the first match in index order); PLATFORM_NOT_FOUND naming `what` otherwise. */
export function selectEntry(index: Index, platform: Platform, what: string): IndexEntry {
  const desc = selectPlatform(index.manifest.parsed, platform, what);
  return index.entries[index.manifest.parsed.manifests.indexOf(desc)]!;
}

/** The image for `platform` out of `a`: itself, or picked from its index (and any index under it). */
export async function selectImage(a: Artifact, platform: Platform, what: string, signal?: AbortSignal): Promise<Image> {
  let cur = a;
  while (cur.kind === "index") cur = await selectEntry(cur, platform, what).open(signal);
  return cur;
}

/** Foreign (non-distributable) layers stay where their URLs point, as docker and crane leave them. */
export function isForeign(d: Descriptor): boolean {
  return (d.urls?.length ?? 0) > 0 && (d.mediaType === MediaType.DOCKER_FOREIGN_LAYER_GZIP || d.mediaType.includes(".nondistributable."));
}

/** `fn` over every item at once; the first failure is thrown once all have settled (none is left running). */
export async function settleAll<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  const results = await Promise.allSettled(items.map(fn));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}
