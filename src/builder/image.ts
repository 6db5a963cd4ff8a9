/**
 * A built stage's config and manifest, assembled from its state (and the index over
 * several platforms' images): what a build reports in its result. The config and
 * manifest are serialised once; their digests are of those bytes. stage-image.ts
 * makes them an Image or Index of the image model (oci/image.ts) for the sinks.
 */
import type { Digest } from "../oci/digest.js";
import { MediaType } from "../oci/media-types.js";
import { type Blob, type Descriptor, encodeJson, descriptorOf, type HistoryEntry, type ImageConfig, type ImageIndex, type ImageManifest, type Platform } from "../oci/manifest.js";
import type { LayerRecord, StageState } from "./stage-state.js";

/** One stage's image: its config and manifest, and the records of its layers (where each blob is). */
export interface BuiltImage {
  readonly config: Blob<ImageConfig>;
  readonly manifest: Blob<ImageManifest>;
  readonly layers: readonly LayerRecord[];
}

/** Docker layer media types become their OCI equivalents in an OCI manifest (same bytes). */
function ociLayerDescriptor(d: Descriptor): Descriptor {
  const mediaType = d.mediaType === MediaType.DOCKER_LAYER_GZIP ? MediaType.OCI_LAYER_GZIP : d.mediaType;
  const out: Descriptor = { mediaType, digest: d.digest, size: d.size };
  if (d.annotations) out.annotations = d.annotations;
  if (d.urls) out.urls = d.urls;
  return out;
}

export interface AssembleOptions {
  /** SOURCE_DATE_EPOCH: the image's creation time and every new history entry's. Otherwise the newest history time. */
  sourceDateEpoch?: number;
  /** Extra labels (--label), applied last. */
  labels?: Record<string, string>;
}

export function assembleImage(state: StageState, opts: AssembleOptions): BuiltImage {
  const baseHistory = state.baseConfig?.history?.length ?? 0;
  const iso = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, "Z");
  let created: string;
  let history: HistoryEntry[] = [...state.history];
  if (opts.sourceDateEpoch !== undefined) {
    created = iso(new Date(opts.sourceDateEpoch * 1000));
    history = state.history.map((h, i) => (i < baseHistory ? h : { ...h, created }));
  } else {
    const times = state.history.slice(baseHistory).map((h) => h.created).filter((t): t is string => t !== undefined);
    created = times.sort().at(-1) ?? state.baseConfig?.created ?? iso(new Date());
    history = state.history.map((h, i) => (i < baseHistory || h.created ? h : { created, ...h }));
  }
  const container = { ...state.config };
  if (opts.labels && Object.keys(opts.labels).length > 0) container.Labels = { ...(container.Labels ?? {}), ...opts.labels };
  const config: ImageConfig = {
    created,
    ...(state.author ?? state.baseConfig?.author ? { author: state.author ?? state.baseConfig?.author } : {}),
    architecture: state.platform.architecture,
    os: state.platform.os,
    ...(state.platform.variant ? { variant: state.platform.variant } : {}),
    config: container,
    rootfs: { type: "layers", diff_ids: state.layers.map((l) => l.diffId) },
    history,
  };
  const configBlob = encodeJson(MediaType.OCI_CONFIG, config);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: descriptorOf(configBlob),
    layers: state.layers.map((l) => ociLayerDescriptor(l.descriptor)),
  };
  return { config: configBlob, manifest: encodeJson(MediaType.OCI_MANIFEST, manifest), layers: state.layers };
}

/** What a build produced: one image, or one per platform under an OCI index. */
export interface BuiltArtifact {
  readonly images: readonly { platform: Platform; image: BuiltImage }[];
  readonly index?: Blob<ImageIndex>;
}

/** The manifest or index that names the whole artifact (what a tag points to). */
export function topBlob(a: BuiltArtifact): Blob {
  return a.index ?? a.images[0]!.image.manifest;
}

export function assembleIndex(images: { platform: Platform; image: BuiltImage }[]): Blob<ImageIndex> {
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: images.map(({ platform, image }) => ({
      ...descriptorOf(image.manifest),
      platform: { architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}) },
    })),
  };
  return encodeJson(MediaType.OCI_INDEX, index);
}

export function artifactSize(a: BuiltArtifact): number {
  return (a.index?.bytes.length ?? 0) + a.images.reduce((n, i) => n + imageSize(i.image), 0);
}

export function imageSize(img: BuiltImage): number {
  return img.config.bytes.length + img.manifest.bytes.length + img.layers.reduce((n, l) => n + l.descriptor.size, 0);
}

export type { Digest };
