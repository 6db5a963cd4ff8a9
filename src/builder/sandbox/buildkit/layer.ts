/**
 * Bringing a layer the BuildKit daemon produced into the build: download it into
 * the content store (its digest checked while streaming), then one pass over the
 * stored blob computes the DiffID (gunzip -> sha256) and counts the tar entries,
 * so the DiffID the daemon's config claims is checked and an empty diff is known.
 */
import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { extract } from "tar-stream";
import { OcibuildError } from "../../../errors.js";
import { type DiffID, type Digest } from "../../../oci/digest.js";
import type { OciLayout } from "../../../oci/layout.js";
import type { Descriptor } from "../../../oci/manifest.js";
import { MediaType } from "../../../oci/media-types.js";
import type { ImageReference } from "../../../oci/reference.js";
import type { RegistryClient } from "../../../oci/registry/index.js";
import type { LayerRecord } from "../../stage-state.js";

const GZIP_TYPES = new Set<string>([MediaType.OCI_LAYER_GZIP, MediaType.DOCKER_LAYER_GZIP]);

class Sha256Pass extends Transform {
  private readonly h = createHash("sha256");
  hex = "";
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.h.update(chunk);
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    this.hex = this.h.digest("hex");
    cb();
  }
}

/** DiffID and entry count of a gzip layer in the content store, in one streaming pass. */
export async function inspectLayerBlob(content: OciLayout, digest: Digest, signal?: AbortSignal): Promise<{ diffId: DiffID; entries: number }> {
  const hash = new Sha256Pass();
  const ex = extract();
  let entries = 0;
  ex.on("entry", (_h, stream, next) => {
    entries++;
    stream.on("end", next);
    stream.resume();
  });
  try {
    await pipeline(content.readBlob(digest, signal), createGunzip(), hash, ex, signal ? { signal } : {});
  } catch (e) {
    if (signal?.aborted) throw new OcibuildError("BUILDKIT_ABORTED", "reading the daemon's layer was cancelled", { cause: e });
    throw new OcibuildError("BUILDKIT_LAYER_INVALID", `the layer ${digest} from the BuildKit daemon is not a gzip tar: ${(e as Error).message}`, { cause: e });
  }
  return { diffId: `sha256:${hash.hex}` as DiffID, entries };
}

/**
 * Download `desc` from `repo` into the content store and check it against the
 * DiffID the daemon's image config lists. Returns undefined for an empty diff.
 */
export async function importLayer(
  registry: RegistryClient,
  content: OciLayout,
  repo: ImageReference,
  desc: Descriptor,
  claimedDiffId: string,
  signal?: AbortSignal,
): Promise<LayerRecord | undefined> {
  if (!GZIP_TYPES.has(desc.mediaType)) {
    throw new OcibuildError("BUILDKIT_LAYER_UNSUPPORTED", `the BuildKit daemon produced a layer of type ${desc.mediaType}; ocibuild asks for gzip layers`, {
      details: { digest: desc.digest },
    });
  }
  const stream = await registry.getBlob(repo, desc.digest, { size: desc.size, signal });
  await content.writeBlob(stream, { digest: desc.digest, size: desc.size }, signal);
  const { diffId, entries } = await inspectLayerBlob(content, desc.digest, signal);
  if (diffId !== claimedDiffId) {
    throw new OcibuildError("BUILDKIT_DIFFID_MISMATCH", `the layer ${desc.digest} from the BuildKit daemon decompresses to ${diffId}, but its config claims ${claimedDiffId}`, {
      details: { digest: desc.digest, claimed: claimedDiffId, actual: diffId },
    });
  }
  if (entries === 0) return undefined;
  return {
    descriptor: { mediaType: MediaType.OCI_LAYER_GZIP, digest: desc.digest, size: desc.size },
    diffId,
    source: { kind: "local" },
  };
}
