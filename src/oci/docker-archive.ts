/**
 * `docker-archive:FILE`: the tar `docker save` writes and `docker load`,
 * `podman load` and `skopeo ... docker-archive:FILE` read:
 *
 *     <diffid-hex>/layer.tar   each layer, uncompressed (its sha256 is its DiffID)
 *     <config-hex>.json        the image config (the same bytes as in the registry)
 *     manifest.json            [{"Config", "RepoTags", "Layers"}]
 *     repositories             {"name": {"tag": "<top layer id>"}} (legacy loaders)
 *
 * Layers are stored uncompressed, as `docker save` does, so every loader accepts
 * them. A compressed layer is decompressed once into a temp file (its size must
 * be in the tar header before its bytes), its DiffID checked on the way, then
 * streamed into the archive and removed: memory stays flat, disk holds one layer.
 */
import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { OcibuildError, isOcibuildError, optionWords } from "../errors.js";
import { removeQuietly } from "../user-path.js";
import { HashingStream } from "./digest.js";
import { type LayerEntry, checkAborted } from "./layer.js";
import { LayerSizeLimit } from "./layer-limit.js";
import type { Image, Layer } from "./image.js";
import { compressionOf, decompressorForMediaType } from "./layer-compression.js";
import { dirEntry, fileEntry, writeTarFile } from "./oci-archive.js";
import { parseReference } from "./reference.js";

/** Options of writeDockerArchive. */
export interface DockerArchiveOptions {
  /** Image names for RepoTags ("app:v1", "registry.example.com/team/app:v1"); each must have a tag. */
  repoTags?: string[];
  /** Most bytes a layer may decompress to (LAYER_TOO_LARGE beyond it); default: no limit. */
  maxLayerSize?: number;
  signal?: AbortSignal;
}

/** What `docker save` calls RepoTags: the familiar form of each reference with its tag. */
export function repoTagsOf(refs: string[]): string[] {
  return refs.map((r) => {
    const ref = parseReference(r);
    if (ref.digest !== undefined) {
      throw new OcibuildError("OUTPUT_INVALID_TAG", `a docker archive names images by tag, not by digest: "${r}"`, { hint: `use ${optionWords("tags", "NAME:TAG")}` });
    }
    return ref.familiar; // parseReference gives "latest" when no tag is written
  });
}

/** Decompresses a gzip or zstd layer to `path`, checking that the result's sha256 is the layer's DiffID. */
async function uncompressTo(layer: Layer, path: string, maxSize: number | undefined, signal?: AbortSignal): Promise<number> {
  const counter = new HashingStream();
  const limit = maxSize === undefined ? [] : [new LayerSizeLimit(maxSize, layer.descriptor.digest)];
  try {
    const decompress = decompressorForMediaType(layer.descriptor.mediaType)!;
    await pipeline([await layer.open(signal), decompress, ...limit, counter, createWriteStream(path, { flags: "wx" })], signal ? { signal } : {});
  } catch (err) {
    if (signal?.aborted) throw new OcibuildError("ABORTED", "writing the docker archive was interrupted", { cause: signal.reason });
    if (isOcibuildError(err)) throw err;
    throw new OcibuildError("LAYER_DECOMPRESS_FAILED", `cannot decompress layer ${layer.descriptor.digest}: ${(err as Error).message}`, { cause: err });
  }
  if (`sha256:${counter.hexDigest}` !== layer.diffId) {
    throw new OcibuildError("LAYER_DIFFID_MISMATCH", `layer ${layer.descriptor.digest} uncompresses to sha256:${counter.hexDigest}, but the config says ${layer.diffId}`, {
      details: { digest: layer.descriptor.digest, expected: layer.diffId, actual: `sha256:${counter.hexDigest}` },
    });
  }
  return counter.size;
}

/**
 * Writes `img` as a docker-archive tar to `path` (temp name, then rename), with
 * `repoTags` as the names `docker load` gives it. Returns the archive's
 * manifest.json entry.
 */
export async function writeDockerArchive(path: string, img: Image, opts: DockerArchiveOptions = {}): Promise<{ Config: string; RepoTags: string[]; Layers: string[] }> {
  checkAborted(opts.signal, "writing the docker archive");
  const repoTags = repoTagsOf(opts.repoTags ?? []);
  const config = await img.config(opts.signal);
  const layers = await img.layers(opts.signal);
  for (const l of layers) {
    // Decompressed on the way in (docker load takes plain tars): gzip, zstd and plain layers.
    if (compressionOf(l.descriptor.mediaType) === undefined) {
      throw new OcibuildError("OUTPUT_UNSUPPORTED_LAYER", `layer ${l.descriptor.digest} has media type ${l.descriptor.mediaType}, which a docker archive cannot hold`, {
        hint: "docker archives take gzip, zstd or uncompressed layers; use an oci: or oci-archive: output",
      });
    }
  }
  const configName = `${config.digest.slice("sha256:".length)}.json`;
  const layerNames = layers.map((l) => `${l.diffId.slice("sha256:".length)}/layer.tar`);
  const manifest = { Config: configName, RepoTags: repoTags, Layers: layerNames };
  const manifestBytes = Buffer.from(`${JSON.stringify([manifest])}\n`);
  const repositories: Record<string, Record<string, string>> = {};
  const top = layers.length > 0 ? layers[layers.length - 1]!.diffId.slice("sha256:".length) : undefined;
  if (top !== undefined) {
    for (const t of repoTags) {
      const colon = t.lastIndexOf(":");
      (repositories[t.slice(0, colon)] ??= {})[t.slice(colon + 1)] = top;
    }
  }
  const repositoriesBytes = Buffer.from(`${JSON.stringify(repositories)}\n`);
  const tmpDir = join(dirname(path), `.${basename(path)}.layers-${randomBytes(6).toString("hex")}`);
  const signal = opts.signal;

  async function* entries(): AsyncGenerator<LayerEntry> {
    const seen = new Set<string>();
    for (const [i, l] of layers.entries()) {
      const name = layerNames[i]!;
      if (seen.has(name)) continue;
      seen.add(name);
      yield dirEntry(name.slice(0, name.indexOf("/")));
      if (compressionOf(l.descriptor.mediaType) === "uncompressed") {
        yield fileEntry(name, l.descriptor.size, (s) => l.open(s));
        continue;
      }
      await mkdir(tmpDir, { recursive: true });
      const tmp = join(tmpDir, String(i));
      const size = await uncompressTo(l, tmp, opts.maxLayerSize, signal);
      yield fileEntry(name, size, () => createReadStream(tmp));
      // The consumer asked for the next entry: this layer's bytes are in the archive.
      await rm(tmp, { force: true });
    }
    yield fileEntry(configName, config.bytes.length, config.bytes);
    yield fileEntry("manifest.json", manifestBytes.length, manifestBytes);
    yield fileEntry("repositories", repositoriesBytes.length, repositoriesBytes);
  }

  try {
    await writeTarFile(path, entries(), { signal, what: "docker archive" });
  } finally {
    await removeQuietly(tmpDir, { recursive: true });
  }
  return manifest;
}
