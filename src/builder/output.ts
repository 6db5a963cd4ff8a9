/**
 * Where a built image goes: registry references (blobs pushed in parallel, base
 * layers mounted from their repository when it is on the same registry, manifest
 * last), OCI layout directories (written next to the target and renamed into
 * place when the directory is new, so a failed build leaves no half layout),
 * and single-file archives (oci-archive, docker-archive; temp name then rename).
 */
import { rename, rm, stat } from "node:fs/promises";
import { PassThrough, Readable } from "node:stream";
import { writeDockerArchive } from "../oci/docker-archive.js";
import { OciLayout } from "../oci/layout.js";
import { type ArchiveImage, writeOciArchive } from "../oci/oci-archive.js";
import { descriptorOf, type Descriptor } from "../oci/manifest.js";
import { parseReference, withDigest, withTag, type ImageReference } from "../oci/reference.js";
import { formatPlatform } from "../oci/platform.js";
import { OcibuildError } from "../errors.js";
import { checkWritable, pathError, removeQuietly } from "../user-path.js";
import { pushImage as pushToRegistry } from "../oci/registry/push.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { topBlob, type BuiltArtifact, type BuiltImage } from "./image.js";
import type { LayerRecord } from "./stage-state.js";
import { checkedBlob, needsDiffIdCheck, type DiffIdRecords } from "./fs/base-layers.js";
import type { EventSink } from "./events.js";

/**
 * One place a build writes its image to (the CLI's `--output`, repeatable):
 * - `registry`: push to `names` (buildx's name=), or to every tag when it has none;
 * - `oci`: an OCI image layout directory, the manifest named `tag` in index.json;
 * - `oci-archive`: the same layout as one tar file;
 * - `docker-archive`: a `docker save` tar that `docker load`/`podman load` read,
 *   named by `tags` (default: the build's tags).
 */
export type BuildOutput =
  | { type: "registry"; names?: string[] }
  | { type: "oci"; dest: string; tag?: string }
  | { type: "oci-archive"; dest: string; tag?: string }
  | { type: "docker-archive"; dest: string; tags?: string[] };

export interface BlobSource {
  content: OciLayout;
  registry: RegistryClient;
  /** Most bytes a layer may decompress to where an output decompresses it (BuildOptions.maxLayerSize). */
  maxLayerSize?: number;
  /** The DiffIDs base blobs were checked against; unchecked base layers are checked as they stream out. */
  diffIds?: DiffIdRecords;
  signal?: AbortSignal;
}

/**
 * A layer's blob from the content store, verified as it streams (a mismatch fails
 * the stream before its last bytes, see VerifyingStream). A copy found corrupt is
 * removed and reported as LAYOUT_BLOB_CORRUPT, retryable when the layer has a
 * registry source: opened again, it then comes from there, as a corrupt cache
 * entry is rebuilt rather than used.
 */
function fromContentStore(layer: LayerRecord, src: BlobSource, signal?: AbortSignal): NodeJS.ReadableStream {
  const digest = layer.descriptor.digest;
  const stream = src.content.readBlob(digest, signal) as Readable;
  const out = new PassThrough();
  stream.on("error", (e) => {
    if (!(e instanceof OcibuildError && e.code === "DIGEST_MISMATCH")) return void out.destroy(e);
    const refetch = layer.source.kind === "registry";
    const corrupt = new OcibuildError("LAYOUT_BLOB_CORRUPT", `the cached copy of layer ${digest} in ${src.content.dir} is corrupt (${e.message}); it was removed`, {
      cause: e,
      retryable: refetch,
      details: { digest },
      hint: refetch ? undefined : "build again: the step that made this layer is then rebuilt",
    });
    rm(src.content.blobPath(digest), { force: true }).then(
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
export async function openLayer(layer: LayerRecord, src: BlobSource, signal?: AbortSignal): Promise<NodeJS.ReadableStream> {
  const check = await needsDiffIdCheck(layer, src.diffIds);
  let blob: NodeJS.ReadableStream;
  if (await src.content.hasBlob(layer.descriptor.digest)) blob = fromContentStore(layer, src, signal);
  else if (layer.source.kind === "registry") {
    blob = await src.registry.getBlob(parseReference(layer.source.ref), layer.descriptor.digest, { size: layer.descriptor.size, signal });
  } else blob = src.content.readBlob(layer.descriptor.digest, signal);
  return check ? checkedBlob(layer, blob, src.diffIds!, src.maxLayerSize) : blob;
}

/** Push one image to every reference (by tag, or by digest for a reference without one). */
export async function pushImage(img: BuiltImage, refs: ImageReference[], src: BlobSource, opts: { onEvent?: EventSink } = {}): Promise<void> {
  const layers = img.layers.map((layer, i) => {
    const desc = img.manifest.parsed.layers[i]!;
    const from = layer.source.kind === "registry" ? parseReference(layer.source.ref) : undefined;
    return {
      desc,
      open: (signal?: AbortSignal) => openLayer(layer, src, signal),
      mountFrom: from && refs.some((r) => r.registry === from.registry) ? [from.repository] : undefined,
    };
  });
  await pushToRegistry(src.registry, refs, { manifest: img.manifest, config: img.config, layers }, {
    signal: src.signal,
    onBlob: (ref, desc, status) => opts.onEvent?.({ type: "push", reference: ref.name, digest: desc.digest, status, size: desc.size }),
  });
}

/**
 * Where a build pushes: every tag unless `push` is false (default: push when there
 * are tags or registry outputs), and each registry output's names (its tags when it
 * has none); each reference once.
 */
export function pushTargets(outputs: readonly BuildOutput[], tags: readonly ImageReference[], push: boolean | undefined): ImageReference[] {
  const registry = outputs.filter((o): o is Extract<BuildOutput, { type: "registry" }> => o.type === "registry");
  const refs = (push ?? (tags.length > 0 || registry.length > 0)) ? [...tags] : [];
  for (const o of registry) refs.push(...(o.names?.map((n) => parseReference(n)) ?? tags));
  const seen = new Set<string>();
  return refs.map((r) => (r.tag ? r : withTag(r, "latest"))).filter((r) => !seen.has(r.toString()) && seen.add(r.toString()));
}

/** Push what the build made: a single image by tag, or every platform's image by digest and then the index by tag. */
export async function pushArtifact(a: BuiltArtifact, refs: ImageReference[], src: BlobSource, opts: { onEvent?: EventSink } = {}): Promise<void> {
  const tagged = refs.map((r) => (r.tag ? r : withTag(r, "latest")));
  if (!a.index) {
    await pushImage(a.images[0]!.image, tagged, src, opts);
    return;
  }
  for (const { image } of a.images) {
    await pushImage(image, tagged.map((r) => withDigest(r, image.manifest.digest)), src, opts);
  }
  // The index last, once every manifest it names is in place.
  for (const r of tagged) await src.registry.putManifest(r, a.index, src.signal);
}

/** One layer into an output layout; a corrupt cached copy of a registry layer is fetched again from its registry, once. */
async function copyLayer(layer: LayerRecord, layout: OciLayout, src: BlobSource): Promise<void> {
  if (await layout.hasBlob(layer.descriptor.digest)) return;
  for (let attempt = 1; ; attempt++) {
    try {
      // openLayer's streams (content store or registry) verify the digest as they stream.
      const stream = await openLayer(layer, src, src.signal);
      await layout.writeBlob(stream, { digest: layer.descriptor.digest, size: layer.descriptor.size }, src.signal, { sourceVerified: true });
      return;
    } catch (e) {
      if (attempt > 1 || !(e instanceof OcibuildError && e.code === "LAYOUT_BLOB_CORRUPT" && e.retryable)) throw e;
    }
  }
}

/** Write the artifact into an OCI layout (created if needed): every image's blobs, then the top manifest or index under `tag`. */
export async function writeLayout(a: BuiltArtifact, dir: string, tag: string | undefined, src: BlobSource): Promise<Descriptor> {
  const exists = await stat(dir).then(
    () => true,
    () => false,
  );
  const target = exists ? dir : `${dir}.ocibuild-tmp-${process.pid}-${Date.now()}`;
  try {
    const layout = await OciLayout.create(target, src.signal);
    for (const { image: img } of a.images) {
      for (const layer of img.layers) await copyLayer(layer, layout, src);
      await layout.writeBlob(img.config.bytes, { digest: img.config.digest, size: img.config.bytes.length }, src.signal);
      await layout.writeBlob(img.manifest.bytes, { digest: img.manifest.digest, size: img.manifest.bytes.length }, src.signal);
    }
    const top = topBlob(a);
    if (a.index) await layout.writeBlob(a.index.bytes, { digest: a.index.digest, size: a.index.bytes.length }, src.signal);
    const desc = descriptorOf(top);
    await layout.addManifest(desc, tag, src.signal);
    if (!exists) await rename(target, dir);
    return desc;
  } catch (e) {
    if (!exists) await removeQuietly(target, { recursive: true });
    throw pathError("OUTPUT_WRITE_FAILED", "cannot write the OCI layout", dir, e);
  }
}

/** The image as the archive writers see it: each layer opened from the content store or its registry. */
export function archiveImage(img: BuiltImage, src: BlobSource): ArchiveImage {
  return {
    manifest: img.manifest,
    config: img.config,
    layers: img.layers.map((layer, i) => ({
      descriptor: img.manifest.parsed.layers[i] ?? layer.descriptor,
      diffId: layer.diffId,
      open: (signal?: AbortSignal) => openLayer(layer, src, signal ?? src.signal),
    })),
  };
}

const OUTPUT_KIND = { oci: "the OCI layout", "oci-archive": "the OCI archive", "docker-archive": "the docker archive" } as const;

/** Before the build: every file output can be written (its directory exists and is writable), or a coded error names it. */
export async function checkOutputPaths(outputs: readonly BuildOutput[]): Promise<void> {
  for (const o of outputs) {
    if (o.type === "registry") continue;
    await checkWritable(o.dest, o.type === "oci" ? "dir" : "file", (e) => pathError("OUTPUT_WRITE_FAILED", `cannot write ${OUTPUT_KIND[o.type]}`, o.dest, e));
  }
}

/**
 * Writes `img` to every file output in `outputs` (oci, oci-archive,
 * docker-archive; `registry` outputs are pushes and are skipped here). `tags`
 * are the build's tags: the default layout ref name and docker-archive RepoTags.
 * Returns what was written, as references ("oci:DIR:TAG", "docker-archive:FILE").
 */
export async function writeOutputs(a: BuiltArtifact, outputs: readonly BuildOutput[], tags: readonly ImageReference[], src: BlobSource): Promise<string[]> {
  const written: string[] = [];
  const img = a.images[0]!.image;
  const single = (kind: string) => {
    if (a.index) {
      throw new OcibuildError("USAGE_BAD_VALUE", `a ${kind} output holds one platform, but ${a.images.length} were built (${a.images.map((i) => formatPlatform(i.platform)).join(", ")}); pick one with --platform, or use --output oci:DIR`);
    }
  };
  for (const out of outputs) {
    src.signal?.throwIfAborted();
    switch (out.type) {
      case "registry":
        break;
      case "oci": {
        const tag = out.tag ?? tags[0]?.tag;
        await writeLayout(a, out.dest, tag, src);
        written.push(`oci:${out.dest}${tag ? `:${tag}` : ""}`);
        break;
      }
      case "oci-archive": {
        single("oci-archive");
        const tag = out.tag ?? tags[0]?.tag;
        await writeOciArchive(out.dest, archiveImage(img, src), { tag, signal: src.signal });
        written.push(`oci-archive:${out.dest}${tag ? `:${tag}` : ""}`);
        break;
      }
      case "docker-archive": {
        single("docker-archive");
        const names = out.tags ?? tags.map((t) => t.toString());
        await writeDockerArchive(out.dest, archiveImage(img, src), { repoTags: names, maxLayerSize: src.maxLayerSize, signal: src.signal });
        written.push(`docker-archive:${out.dest}`);
        break;
      }
    }
  }
  return written;
}
