/**
 * The images a build made, kept in the cache's content store (CACHE/content, an OCI
 * layout) so that `ocibuild run $(cat iidfile)` finds them without a registry: the
 * config, manifest and index blobs are stored next to the layers, and
 * CACHE/images/<hex> maps an image ID (the config digest of a single-platform
 * image, as --iidfile writes it) to the manifest that holds it. A multi-platform
 * build's ID is its index digest, found as a blob directly.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { OcibuildError, optionWords } from "../errors.js";
import { hexOf, isDigestString, type Digest } from "../oci/digest.js";
import { OciLayout } from "../oci/layout.js";
import { type Blob, type Descriptor, descriptorOf } from "../oci/manifest.js";
import type { BuiltArtifact } from "./image.js";

const idFile = (cacheDir: string, id: Digest) => join(cacheDir, "images", hexOf(id));

/** A small file's text, or undefined (read synchronously: a few hundred bytes, once per build). */
function readOptional(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** Store the artifact's config, manifest and index blobs, and its image ID's entry. */
export async function recordBuiltImage(cacheDir: string, content: OciLayout, artifact: BuiltArtifact, signal?: AbortSignal): Promise<void> {
  const blobs = new Map<string, Blob>();
  for (const { image } of artifact.images) for (const b of [image.config, image.manifest]) blobs.set(b.digest, b);
  if (artifact.index) blobs.set(artifact.index.digest, artifact.index);
  // The blobs at the same time (each written atomically); the image ID's entry once they are in place.
  const put = (b: Blob) => content.writeBlob(b.bytes, { digest: b.digest, size: b.bytes.length }, signal);
  await Promise.all([...[...blobs.values()].map(put), artifact.index ? undefined : mkdir(join(cacheDir, "images"), { recursive: true })]);
  if (artifact.index) return;
  const { config, manifest } = artifact.images[0]!.image;
  const path = idFile(cacheDir, config.digest);
  const entry = JSON.stringify(descriptorOf(manifest));
  // A rebuild of the same image (a fully cached one, say) finds its entry in place: nothing to write.
  if (readOptional(path) === entry) return;
  await mkdir(join(cacheDir, "images"), { recursive: true });
  const tmp = `${path}.tmp-${randomBytes(6).toString("hex")}`;
  await writeFile(tmp, entry);
  await rename(tmp, path);
}

/** The content store and the manifest or index an image ID names. */
export async function localImage(cacheDir: string, id: Digest, signal?: AbortSignal): Promise<{ layout: OciLayout; top: Descriptor }> {
  const notFound = () =>
    new OcibuildError("RUN_IMAGE_NOT_FOUND", `no image ${id} in the local content store ${join(cacheDir, "content")}`, {
      hint: `an image ID is the config digest of an image built with the same cache directory (${optionWords("cacheDir")}); otherwise name the image by reference`,
    });
  let layout: OciLayout;
  try {
    layout = await OciLayout.open(join(cacheDir, "content"), signal);
  } catch {
    throw notFound();
  }
  const text = await readFile(idFile(cacheDir, id), "utf8").catch(() => undefined);
  if (text !== undefined) {
    const desc = JSON.parse(text) as Descriptor;
    if (isDigestString(desc.digest) && (await layout.hasBlob(desc.digest, signal))) return { layout, top: desc };
  }
  if (await layout.hasBlob(id, signal)) {
    const bytes = await layout.readBlobBytes(id, signal);
    const mediaType = (JSON.parse(Buffer.from(bytes).toString("utf8")) as { mediaType?: string }).mediaType;
    if (mediaType?.includes("index") || mediaType?.includes("manifest.list")) return { layout, top: { mediaType, digest: id, size: bytes.length } };
  }
  throw notFound();
}
