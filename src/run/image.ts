/**
 * The image `ocibuild run` starts: its config and its layers (each with a way to
 * open its blob), read from wherever the user names it: a registry reference,
 * `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE`, or the ID
 * `ocibuild build --iidfile` wrote (resolved from the cache's content store,
 * local-images.ts).
 */
import { createReadStream } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { runProcess } from "../process.js";
import { parseDiffID, type Digest, type DiffID } from "../oci/digest.js";
import { OciLayout, parseLayoutRef } from "../oci/layout.js";
import { type AnyManifest, type Descriptor, type ImageConfig, type ImageManifest, parseImageConfig, parseManifest } from "../oci/manifest.js";
import { formatPlatform, hostPlatform, normalizePlatform, platformMatches, selectPlatform, type Platform } from "../oci/platform.js";
import { parseReference, withDigest } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { localImage } from "../builder/local-images.js";

export interface RunLayer {
  diffId: DiffID;
  mediaType: string;
  /** For messages: the blob's digest or the archive member. */
  name: string;
  open(signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
}

export interface RunImage {
  /** As the user named it. */
  name: string;
  config: ImageConfig;
  platform: Platform;
  layers: RunLayer[];
}

export interface OpenImageOptions {
  platform?: Platform;
  cacheDir: string;
  registry: RegistryClient;
  /** A private directory for unpacking archives (removed by the caller). */
  scratch: string;
  signal?: AbortSignal;
}

/** How manifests and blobs of one source are read. */
interface Reader {
  manifest(desc: Descriptor, signal?: AbortSignal): Promise<AnyManifest>;
  blob(desc: Descriptor, signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
  bytes(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
}

const ID = /^(sha256:)?[0-9a-f]{64}$/;

export async function openRunImage(text: string, opts: OpenImageOptions): Promise<RunImage> {
  if (ID.test(text)) {
    const id = (text.startsWith("sha256:") ? text : `sha256:${text}`) as Digest;
    const { layout, top } = await localImage(opts.cacheDir, id, opts.signal);
    const reader = layoutReader(layout);
    // A base layer no step needed was never pulled: the layer store may not have it either.
    const blob = async (desc: Descriptor, signal?: AbortSignal) => {
      if (await layout.hasBlob(desc.digest, signal)) return reader.blob(desc, signal);
      throw new OcibuildError("RUN_IMAGE_INCOMPLETE", `layer ${desc.digest} of image ${text} is not in the local content store (a base layer the build never needed to pull)`, {
        hint: `push the image and run it by reference, or write it with ${optionWords("outputs", "oci:DIR")} and run oci:DIR`,
      });
    };
    return fromManifest(text, await reader.manifest(top, opts.signal), { ...reader, blob }, opts);
  }
  if (text.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(text);
    return fromLayout(text, dir, ref, opts);
  }
  if (text.startsWith("oci-archive:")) {
    const { path, ref } = splitArchive(text.slice("oci-archive:".length));
    const dir = await unpack(path, join(opts.scratch, "archive"), text, opts.signal);
    return fromLayout(text, dir, ref, opts);
  }
  if (text.startsWith("docker-archive:")) {
    const { path } = splitArchive(text.slice("docker-archive:".length));
    return fromDockerArchive(text, await unpack(path, join(opts.scratch, "archive"), text, opts.signal), opts);
  }
  const ref = parseReference(text.startsWith("docker://") ? text.slice("docker://".length) : text);
  const client = opts.registry;
  const reader: Reader = {
    manifest: (desc, signal) => client.getManifest(withDigest(ref, desc.digest), { signal }),
    blob: (desc, signal) => client.getBlob(ref, desc.digest, { size: desc.size, signal }),
    bytes: (desc, signal) => client.getBlobBytes(ref, desc.digest, { size: desc.size, signal }),
  };
  return fromManifest(text, await client.getManifest(ref, { signal: opts.signal }), reader, opts);
}

function splitArchive(rest: string): { path: string; ref?: string } {
  const colon = rest.indexOf(":");
  return colon < 0 ? { path: rest } : { path: rest.slice(0, colon), ref: rest.slice(colon + 1) };
}

function layoutReader(layout: OciLayout): Reader {
  return {
    manifest: async (desc, signal) => parseManifest(await layout.readBlobBytes(desc.digest, signal), desc.mediaType),
    blob: async (desc, signal) => layout.readBlob(desc.digest, signal),
    bytes: (desc, signal) => layout.readBlobBytes(desc.digest, signal),
  };
}

async function fromLayout(text: string, dir: string, ref: string | undefined, opts: OpenImageOptions): Promise<RunImage> {
  const layout = await OciLayout.open(dir, opts.signal);
  const desc = await layout.resolve(ref, opts.signal);
  if (!desc) {
    throw new OcibuildError("LAYOUT_REF_NOT_FOUND", ref === undefined ? `the OCI layout ${dir} holds no image` : `the OCI layout ${dir} has no image named "${ref}"`, { file: dir });
  }
  const reader = layoutReader(layout);
  return fromManifest(text, await reader.manifest(desc, opts.signal), reader, opts);
}

/** The image for the platform asked for (this host's by default) out of a manifest or index. */
async function fromManifest(text: string, top: AnyManifest, reader: Reader, opts: OpenImageOptions): Promise<RunImage> {
  let m = top;
  for (let depth = 0; m.kind === "index"; depth++) {
    if (depth > 3) throw new OcibuildError("MANIFEST_INVALID", `${text} nests indexes too deeply`);
    m = await reader.manifest(selectPlatform(m.blob.parsed, opts.platform ?? hostPlatform(), text), opts.signal);
  }
  const manifest: ImageManifest = m.blob.parsed;
  const config = parseImageConfig(await reader.bytes(manifest.config, opts.signal), manifest.config.mediaType).parsed;
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new OcibuildError("MANIFEST_INVALID", `image ${text} has ${manifest.layers.length} layers but its config lists ${diffIds.length} diff IDs`);
  }
  const layers = manifest.layers.map((d, i) => ({
    diffId: parseDiffID(diffIds[i]!),
    mediaType: d.mediaType,
    name: d.digest,
    open: (signal?: AbortSignal) => reader.blob(d, signal),
  }));
  const platform = platformOf(config);
  checkPlatform(text, platform, opts.platform);
  return { name: text, config, platform, layers };
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

/** docker save's layout: manifest.json names the config and the layer tars of each image. */
async function fromDockerArchive(text: string, dir: string, opts: OpenImageOptions): Promise<RunImage> {
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
  const config = parseImageConfig(await readFile(inside(entry.Config))).parsed;
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== entry.Layers.length) throw bad(`${entry.Layers.length} layers but the config lists ${diffIds.length} diff IDs`);
  const platform = platformOf(config);
  checkPlatform(text, platform, opts.platform);
  const layers = entry.Layers.map((p, i) => {
    const path = inside(p);
    return { diffId: parseDiffID(diffIds[i]!), mediaType: "application/vnd.docker.image.rootfs.diff.tar", name: p, open: async () => createReadStream(path) };
  });
  return { name: text, config, platform, layers };
}
