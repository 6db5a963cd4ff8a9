/**
 * Sources of the image model (image.ts): a registry reference and an OCI layout,
 * each read lazily (the top manifest or index when opened, children, configs and
 * blobs when asked), every read verified against its digest. The build's own
 * stages are a source too (builder/stage-image.ts).
 */
import { OcibuildError } from "../errors.js";
import { type Artifact, type BlobReader, readerArtifact } from "./image.js";
import { OciLayout, parseLayoutRef } from "./layout.js";
import { parseManifest } from "./manifest.js";
import { type ImageReference, parseReference, parseReferenceNoDefault, withDigest } from "./reference.js";
import type { RegistryClient } from "./registry/client.js";

export type ImageLocation = { kind: "layout"; dir: string; ref?: string; text: string } | { kind: "registry"; ref: ImageReference; text: string };

/** "oci:DIR[:tag]" or a registry reference ("docker://" prefix accepted, as skopeo writes it). */
export function parseLocation(s: string, opts: { defaultTag?: boolean } = {}): ImageLocation {
  if (s.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(s);
    return ref === undefined ? { kind: "layout", dir, text: s } : { kind: "layout", dir, ref, text: s };
  }
  const bare = s.startsWith("docker://") ? s.slice("docker://".length) : s;
  const ref = opts.defaultTag === false ? parseReferenceNoDefault(bare) : parseReference(bare);
  return { kind: "registry", ref, text: s };
}

/** The blobs and child manifests of `ref`'s repository (its mirrors first, as the client pulls). */
export function registryReader(client: RegistryClient, ref: ImageReference, name: string): BlobReader {
  return {
    name,
    origin: ref,
    manifest: (desc, signal) => client.getManifest(withDigest(ref, desc.digest), { signal }),
    open: (desc, signal) => client.getBlob(ref, desc.digest, { size: desc.size, signal }),
    bytes: (desc, signal) => client.getBlobBytes(ref, desc.digest, { size: desc.size, signal }),
  };
}

/** The image or index `ref` names in its registry. */
export async function openRegistry(client: RegistryClient, ref: ImageReference, name: string, signal?: AbortSignal): Promise<Artifact> {
  return readerArtifact(registryReader(client, ref, name), await client.getManifest(ref, { signal }));
}

/** The blobs of an OCI layout (a content store is one). */
export function layoutReader(layout: OciLayout, name: string): BlobReader {
  return {
    name,
    manifest: async (desc, signal) => parseManifest(await layout.readBlobBytes(desc.digest, signal), desc.mediaType),
    open: async (desc, signal) => layout.readBlob(desc.digest, signal),
    bytes: (desc, signal) => layout.readBlobBytes(desc.digest, signal),
  };
}

/** The image or index named `ref` (a tag or a digest; none: the only one) in the layout `dir`. */
export async function openLayout(dir: string, ref: string | undefined, name: string, signal?: AbortSignal): Promise<Artifact> {
  const layout = await OciLayout.open(dir, signal);
  const desc = await layout.resolve(ref, signal);
  if (!desc) {
    throw new OcibuildError("LAYOUT_REF_NOT_FOUND", ref === undefined ? `the OCI layout ${dir} holds no image` : `the OCI layout ${dir} has no image named "${ref}"`, {
      file: dir,
    });
  }
  const reader = layoutReader(layout, name);
  return readerArtifact(reader, await reader.manifest(desc, signal));
}

/** What `loc` names; `client` is asked for only when a registry is read. */
export function openLocation(loc: ImageLocation, client: () => RegistryClient, signal?: AbortSignal): Promise<Artifact> {
  return loc.kind === "layout" ? openLayout(loc.dir, loc.ref, loc.text, signal) : openRegistry(client(), loc.ref, loc.text, signal);
}
