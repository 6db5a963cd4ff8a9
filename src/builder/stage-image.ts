/**
 * The build's finished stages as a source of the image model (oci/image.ts): the
 * config and manifest assembled in memory (image.ts), each layer opened from the
 * content store, or from the registry it came from (a base image's, a registry cache
 * hit's) when the store does not have it, and mountable from there. A base layer
 * whose blob was never checked against its DiffID is checked as it streams out.
 */
import { rm } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import { OcibuildError } from "../errors.js";
import { type Artifact, type Image, type Index, type Layer, memoryBlob } from "../oci/image.js";
import type { OciLayout } from "../oci/layout.js";
import type { Platform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { checkedBlob, needsDiffIdCheck, type DiffIdRecords } from "./fs/base-layers.js";
import type { BuiltArtifact, BuiltImage } from "./image.js";
import type { LayerRecord } from "./stage-state.js";
import type { AttestationManifest } from "../attest/statement.js";
import type { DiffID } from "../oci/digest.js";
import type { Blob, ImageConfig } from "../oci/manifest.js";

/** Where a built image's layer blobs are. */
export interface StageBlobs {
  content: OciLayout;
  registry: RegistryClient;
  /** Most bytes a layer may decompress to where it is checked on its way (BuildOptions.maxLayerSize). */
  maxLayerSize?: number;
  /** The DiffIDs base blobs were checked against; unchecked base layers are checked as they stream out. */
  diffIds?: DiffIdRecords;
}

/**
 * A layer's blob from the content store, verified as it streams (a mismatch fails
 * the stream before its last bytes, see VerifyingStream). A copy found corrupt is
 * removed and reported as LAYOUT_BLOB_CORRUPT, retryable when the layer has a
 * registry source: opened again, it then comes from there, as a corrupt cache
 * entry is rebuilt rather than used.
 */
function fromContentStore(layer: LayerRecord, content: OciLayout, signal?: AbortSignal): NodeJS.ReadableStream {
  const digest = layer.descriptor.digest;
  const stream = content.readBlob(digest, signal) as Readable;
  const out = new PassThrough();
  stream.on("error", (e) => {
    if (!(e instanceof OcibuildError && e.code === "DIGEST_MISMATCH")) return void out.destroy(e);
    const refetch = layer.source.kind === "registry";
    const corrupt = new OcibuildError("LAYOUT_BLOB_CORRUPT", `the cached copy of layer ${digest} in ${content.dir} is corrupt (${e.message}); it was removed`, {
      cause: e,
      retryable: refetch,
      details: { digest },
      hint: refetch ? undefined : "build again: the step that made this layer is then rebuilt",
    });
    rm(content.blobPath(digest), { force: true }).then(
      () => out.destroy(corrupt),
      () => out.destroy(corrupt),
    );
  });
  out.on("close", () => stream.destroy());
  return stream.pipe(out);
}

/**
 * Open a layer's compressed bytes: from the content store, else from its registry. A
 * base layer whose blob was never checked against its DiffID (never extracted: `FROM x`
 * + `LABEL`) is checked as it streams, once per blob (see fs/base-layers.ts).
 */
export async function openLayer(layer: LayerRecord, src: StageBlobs, signal?: AbortSignal): Promise<NodeJS.ReadableStream> {
  const check = await needsDiffIdCheck(layer, src.diffIds);
  let blob: NodeJS.ReadableStream;
  if (await src.content.hasBlob(layer.descriptor.digest)) blob = fromContentStore(layer, src.content, signal);
  else if (layer.source.kind === "registry") {
    blob = await src.registry.getBlob(parseReference(layer.source.ref), layer.descriptor.digest, { size: layer.descriptor.size, signal });
  } else blob = src.content.readBlob(layer.descriptor.digest, signal);
  return check ? checkedBlob(layer, blob, src.diffIds!, src.maxLayerSize) : blob;
}

/** A built image (one stage's config, manifest and layer records) as an Image. */
export function stageImage(img: BuiltImage, src: StageBlobs, platform?: Platform): Image {
  const manifest = img.manifest;
  const layers: Layer[] = img.layers.map((rec, i) => ({
    descriptor: manifest.parsed.layers[i] ?? rec.descriptor,
    diffId: rec.diffId,
    ...(rec.source.kind === "registry" ? { origin: parseReference(rec.source.ref) } : {}),
    open: (signal?: AbortSignal) => openLayer(rec, src, signal),
  }));
  return {
    kind: "image",
    manifest,
    blobs: [memoryBlob(manifest.parsed.config, img.config.bytes), ...layers],
    ...(platform ? { platform } : {}),
    config: async () => img.config,
    layers: async () => layers,
  };
}

/** An attestation manifest (in memory) as an Image: its in-toto layers are uncompressed, their DiffID their digest. */
export function attestationImage(m: AttestationManifest): Image {
  const layers: Layer[] = m.layers.map((l) => ({ ...memoryBlob(l.descriptor, l.bytes), diffId: l.descriptor.digest as unknown as DiffID }));
  return {
    kind: "image",
    manifest: m.manifest,
    blobs: [memoryBlob(m.manifest.parsed.config, m.config.bytes), ...layers],
    platform: { os: "unknown", architecture: "unknown" },
    config: async () => m.config as Blob<ImageConfig>,
    layers: async () => layers,
  };
}

/** What a build made as an Image, or an Index over every platform's image (and the attestation manifests after them). */
export function stageArtifact(a: BuiltArtifact, src: StageBlobs): Artifact {
  if (!a.index) return stageImage(a.images[0]!.image, src, a.images[0]!.platform);
  const index: Index = {
    kind: "index",
    manifest: a.index,
    entries: a.index.parsed.manifests.map((descriptor, i) => ({
      descriptor,
      open: async () => (i < a.images.length ? stageImage(a.images[i]!.image, src, a.images[i]!.platform) : attestationImage(a.attestations![i - a.images.length]!)),
    })),
  };
  return index;
}
