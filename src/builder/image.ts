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
import type { AttestationManifest } from "../attest/statement.js";

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
  /** The manifest's annotations (the manifest level of the build's annotations, and the base image's name and digest). */
  annotations?: Record<string, string>;
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
    ...(opts.annotations && Object.keys(opts.annotations).length ? { annotations: opts.annotations } : {}),
  };
  return { config: configBlob, manifest: encodeJson(MediaType.OCI_MANIFEST, manifest), layers: state.layers };
}

/** What a build produced: one image, or one per platform under an OCI index, with the attestation manifests it names after the images. */
export interface BuiltArtifact {
  readonly images: readonly { platform: Platform; image: BuiltImage }[];
  readonly index?: Blob<ImageIndex>;
  /** The attestation manifests (BuildKit's storage), in the index after the images. */
  readonly attestations?: readonly AttestationManifest[];
}

/** The manifest or index that names the whole artifact (what a tag points to). */
export function topBlob(a: BuiltArtifact): Blob {
  return a.index ?? a.images[0]!.image.manifest;
}

export interface IndexOptions {
  /** The index's own annotations (the index level). */
  annotations?: Record<string, string>;
  /** Each image's descriptor annotations (the manifest-descriptor level). */
  descriptorAnnotations?: (platform: Platform) => Record<string, string> | undefined;
  attestations?: readonly AttestationManifest[];
}

export function assembleIndex(images: readonly { platform: Platform; image: BuiltImage }[], opts: IndexOptions = {}): Blob<ImageIndex> {
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: [
      ...images.map(({ platform, image }) => {
        const annotations = opts.descriptorAnnotations?.(platform);
        return {
          ...descriptorOf(image.manifest),
          ...(annotations ? { annotations } : {}),
          platform: { architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}) },
        };
      }),
      ...(opts.attestations ?? []).map((a) => a.indexEntry),
    ],
    ...(opts.annotations ? { annotations: opts.annotations } : {}),
  };
  return encodeJson(MediaType.OCI_INDEX, index);
}

export function artifactSize(a: BuiltArtifact): number {
  const attestations = (a.attestations ?? []).reduce((n, m) => n + m.manifest.bytes.length + m.config.bytes.length + m.layers.reduce((k, l) => k + l.bytes.length, 0), 0);
  return (a.index?.bytes.length ?? 0) + a.images.reduce((n, i) => n + imageSize(i.image), 0) + attestations;
}

export function imageSize(img: BuiltImage): number {
  return img.config.bytes.length + img.manifest.bytes.length + img.layers.reduce((n, l) => n + l.descriptor.size, 0);
}

export type { Digest };
