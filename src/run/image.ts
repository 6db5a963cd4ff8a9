/**
 * The image `ocibuild run` starts: its config and its layers (each with a way to
 * open its blob), read through the sources of the image model (oci/sources.ts) from
 * wherever the user names it: a registry reference, `oci:DIR[:TAG]`,
 * `oci-archive:FILE[:TAG]` (unpacked, then read as a layout), `docker-archive:FILE`,
 * or the ID `ocibuild build --iidfile` wrote (resolved from the cache's content
 * store, local-images.ts).
 */
import { createReadStream } from "node:fs";
import { mkdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { runProcess } from "../process.js";
import { type Digest, VerifyingStream } from "../oci/digest.js";
import { type Artifact, type Image, type ImageBlob, type Layer, readerArtifact, selectImage, zipLayers } from "../oci/image.js";
import { parseLayoutRef } from "../oci/layout.js";
import { type Descriptor, type ImageConfig, type ImageManifest, encodeJson, parseImageConfig, descriptorOf } from "../oci/manifest.js";
import { MediaType } from "../oci/media-types.js";
import { formatPlatform, hostPlatform, normalizePlatform, platformMatches, type Platform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { layoutReader, openLayout, openRegistry } from "../oci/sources.js";
import { localImage } from "../builder/local-images.js";

export interface RunImage {
  /** As the user named it. */
  name: string;
  config: ImageConfig;
  platform: Platform;
  layers: readonly Layer[];
}

export interface OpenImageOptions {
  platform?: Platform;
  cacheDir: string;
  registry: RegistryClient;
  /** A private directory for unpacking archives (removed by the caller). */
  scratch: string;
  signal?: AbortSignal;
}

const ID = /^(sha256:)?[0-9a-f]{64}$/;
/** What a docker archive's layer.tar is: an uncompressed layer. */
const DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar";

export async function openRunImage(text: string, opts: OpenImageOptions): Promise<RunImage> {
  const image = await selectImage(await openArtifact(text, opts), opts.platform ?? hostPlatform(), text, opts.signal);
  const config = (await image.config(opts.signal)).parsed;
  const layers = await image.layers(opts.signal);
  const platform = platformOf(config);
  checkPlatform(text, platform, opts.platform);
  return { name: text, config, platform, layers };
}

async function openArtifact(text: string, opts: OpenImageOptions): Promise<Artifact> {
  if (ID.test(text)) return localArtifact(text, opts);
  if (text.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(text);
    return openLayout(dir, ref, text, opts.signal);
  }
  if (text.startsWith("oci-archive:")) {
    const { path, ref } = splitArchive(text.slice("oci-archive:".length));
    const dir = await unpack(path, join(opts.scratch, "archive"), text, opts.signal);
    return openLayout(dir, ref, text, opts.signal);
  }
  if (text.startsWith("docker-archive:")) {
    const { path } = splitArchive(text.slice("docker-archive:".length));
    return dockerArchiveImage(text, await unpack(path, join(opts.scratch, "archive"), text, opts.signal));
  }
  const ref = parseReference(text.startsWith("docker://") ? text.slice("docker://".length) : text);
  return openRegistry(opts.registry, ref, text, opts.signal);
}

/** An image ID: the manifest or index the build recorded, read from the content store. */
async function localArtifact(text: string, opts: OpenImageOptions): Promise<Artifact> {
  const id = (text.startsWith("sha256:") ? text : `sha256:${text}`) as Digest;
  const { layout, top } = await localImage(opts.cacheDir, id, opts.signal);
  const reader = layoutReader(layout, text);
  // A base layer no step needed was never pulled: the layer store may not have it either.
  const open = async (desc: Descriptor, signal?: AbortSignal) => {
    if (await layout.hasBlob(desc.digest, signal)) return reader.open(desc, signal);
    throw new OcibuildError("RUN_IMAGE_INCOMPLETE", `layer ${desc.digest} of image ${text} is not in the local content store (a base layer the build never needed to pull)`, {
      hint: `push the image and run it by reference, or write it with ${optionWords("outputs", "oci:DIR")} and run oci:DIR`,
    });
  };
  return readerArtifact({ ...reader, open }, await reader.manifest(top, opts.signal));
}

function splitArchive(rest: string): { path: string; ref?: string } {
  const colon = rest.indexOf(":");
  return colon < 0 ? { path: rest } : { path: rest.slice(0, colon), ref: rest.slice(colon + 1) };
}

/** A single-platform image asked for with --platform must be that platform (as docker run checks). */
function checkPlatform(text: string, have: Platform, want: Platform | undefined): void {
  if (want === undefined || platformMatches(want, have)) return;
  throw new OcibuildError("PLATFORM_NOT_FOUND", `${text} is a ${formatPlatform(have)} image, not ${formatPlatform(want)}`, { details: { available: [formatPlatform(have)] } });
}

function platformOf(cfg: ImageConfig): Platform {
  return normalizePlatform({ os: cfg.os, architecture: cfg.architecture, ...(cfg.variant ? { variant: cfg.variant } : {}) });
}

/** Unpack an archive into `dest` with tar(1) (streamed; members are checked by tar itself). */
async function unpack(file: string, dest: string, text: string, signal?: AbortSignal): Promise<string> {
  await mkdir(dest, { recursive: true, mode: 0o700 });
  const r = await runProcess("tar", ["-xf", resolve(file), "-C", dest, "--no-same-owner", "--no-same-permissions"], { signal }).catch((e: Error) => ({ code: -1, stderr: e.message }));
  if (r.code !== 0) throw new OcibuildError("RUN_IMAGE_UNREADABLE", `cannot read ${text}: ${r.stderr.trim() || `tar exited with ${r.code}`}`, { file });
  return dest;
}

function verified(file: NodeJS.ReadableStream, desc: Descriptor): NodeJS.ReadableStream {
  const verifier = new VerifyingStream(desc.digest, desc.size);
  file.on("error", (e: Error) => verifier.destroy(e));
  return file.pipe(verifier);
}

/**
 * docker save's layout, unpacked in `dir`: manifest.json names the config and the
 * layer tars of each image. As an Image: the manifest a registry would hold for it
 * (each layer.tar an uncompressed layer, its digest its DiffID, checked as it streams).
 */
async function dockerArchiveImage(text: string, dir: string): Promise<Image> {
  const bad = (why: string) => new OcibuildError("RUN_IMAGE_UNREADABLE", `${text} is not a docker archive: ${why}`);
  let entries: { Config?: string; Layers?: string[] }[];
  try {
    entries = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as typeof entries;
  } catch (e) {
    throw bad(`manifest.json: ${(e as Error).message}`);
  }
  const entry = entries[0];
  if (!Array.isArray(entries) || entries.length !== 1 || !entry?.Config || !Array.isArray(entry.Layers)) throw bad("manifest.json must describe one image");
  const inside = (p: string) => {
    const full = resolve(dir, p);
    if (!full.startsWith(`${dir}/`)) throw bad(`"${p}" points outside the archive`);
    return full;
  };
  const config = parseImageConfig(await readFile(inside(entry.Config)));
  const diffIds = config.parsed.rootfs?.diff_ids ?? [];
  if (diffIds.length !== entry.Layers.length) throw bad(`${entry.Layers.length} layers but the config lists ${diffIds.length} diff IDs`);
  const layerBlobs: ImageBlob[] = [];
  for (const [i, p] of entry.Layers.entries()) {
    const path = inside(p);
    const descriptor: Descriptor = { mediaType: DOCKER_LAYER_TAR, digest: diffIds[i]! as string as Digest, size: (await stat(path)).size };
    layerBlobs.push({ descriptor, open: async (signal) => verified(createReadStream(path, signal ? { signal } : {}), descriptor) });
  }
  const manifest = encodeJson<ImageManifest>(MediaType.DOCKER_MANIFEST, {
    schemaVersion: 2,
    mediaType: MediaType.DOCKER_MANIFEST,
    config: descriptorOf(config, { mediaType: MediaType.DOCKER_CONFIG }),
    layers: layerBlobs.map((b) => b.descriptor),
  });
  const layers = zipLayers(manifest, layerBlobs, config.parsed, text);
  const configBlob: ImageBlob = { descriptor: manifest.parsed.config, open: async () => createReadStream(inside(entry.Config!)) };
  return { kind: "image", manifest, blobs: [configBlob, ...layerBlobs], config: async () => config, layers: async () => layers };
}
