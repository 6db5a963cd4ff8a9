/** Test images made byte by byte: a gzip tar layer, a config, a manifest, an index. */
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";
import { type Digest, diffIdOf, digestOf } from "../../../src/oci/digest.js";
import { type Blob, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, encodeJson } from "../../../src/oci/manifest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import type { RegistryClient } from "../../../src/oci/registry/index.js";
import { type ImageReference, withDigest } from "../../../src/oci/reference.js";
import { Readable } from "node:stream";
import { type Image, memoryBlob } from "../../../src/oci/image.js";

export async function tarOf(files: Record<string, string | Uint8Array>): Promise<Uint8Array> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on("data", (c) => chunks.push(c as Buffer));
    p.on("end", resolve);
    p.on("error", reject);
  });
  for (const [name, content] of Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1))) {
    p.entry({ name, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0 }, Buffer.from(content));
  }
  p.finalize();
  await done;
  return new Uint8Array(Buffer.concat(chunks));
}

export interface TestLayer {
  bytes: Uint8Array;
  desc: Descriptor;
  diffId: ReturnType<typeof diffIdOf>;
}

export async function layerOf(files: Record<string, string | Uint8Array>): Promise<TestLayer> {
  const tar = await tarOf(files);
  const bytes = new Uint8Array(gzipSync(tar));
  return { bytes, diffId: diffIdOf(tar), desc: { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(bytes), size: bytes.length } };
}

export interface TestImage {
  layers: TestLayer[];
  config: Blob<ImageConfig>;
  manifest: Blob<ImageManifest>;
  blobs: Map<Digest, Uint8Array>;
}

export async function imageOf(arch: string, files: Record<string, string | Uint8Array>, variant?: string): Promise<TestImage> {
  const layer = await layerOf(files);
  const cfg: ImageConfig = {
    architecture: arch,
    os: "linux",
    ...(variant ? { variant } : {}),
    config: { Cmd: ["/hello"] },
    rootfs: { type: "layers", diff_ids: [layer.diffId] },
  };
  const config = encodeJson(MediaType.OCI_CONFIG, cfg);
  const manifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: config.digest, size: config.bytes.length },
    layers: [layer.desc],
  });
  const blobs = new Map<Digest, Uint8Array>([
    [layer.desc.digest, layer.bytes],
    [config.digest, config.bytes],
  ]);
  return { layers: [layer], config, manifest, blobs };
}

export function indexOf(images: { image: TestImage; arch: string; variant?: string }[]): Blob<ImageIndex> {
  return encodeJson<ImageIndex>(MediaType.OCI_INDEX, {
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests: images.map(({ image, arch, variant }) => ({
      mediaType: MediaType.OCI_MANIFEST,
      digest: image.manifest.digest,
      size: image.manifest.bytes.length,
      platform: { os: "linux", architecture: arch, ...(variant ? { variant } : {}) },
    })),
  });
}

/** Push an image's blobs and manifest with the client under test. */
export async function pushImage(client: RegistryClient, ref: ImageReference, img: TestImage, tagged = true): Promise<void> {
  for (const [digest, bytes] of img.blobs) {
    await client.pushBlob(ref, { mediaType: "application/octet-stream", digest, size: bytes.length }, () => Readable.from([Buffer.from(bytes)]));
  }
  await client.putManifest(tagged ? ref : withDigest(ref, img.manifest.digest), img.manifest);
}

export async function collect(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** A test image as the image model's Image: its blobs opened from memory. */
export function imageValue(img: TestImage): Image {
  const layers = img.layers.map((l) => ({ ...memoryBlob(l.desc, l.bytes), diffId: l.diffId }));
  return {
    kind: "image",
    manifest: img.manifest,
    blobs: [memoryBlob(img.manifest.parsed.config, img.config.bytes), ...layers],
    config: async () => img.config,
    layers: async () => layers,
  };
}
