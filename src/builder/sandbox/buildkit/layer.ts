/**
 * Bringing a layer the BuildKit daemon produced into the build, in one streaming
 * pass: registry blob -> digest check -> gunzip or zstd -> DiffID check (against the
 * daemon's config) -> tar entries -> our layer writer (tar -> gzip or zstd -> hashes ->
 * content store). Re-encoding makes it our layer like any other: our entry
 * encoding and SOURCE_DATE_EPOCH clamping. The daemon's diff is kept whole: the
 * /dev, /proc and /sys mount points runc made in a root that lacked them stay in
 * it, as in BuildKit's own image (and the bubblewrap executor's layer).
 */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OcibuildError } from "../../../errors.js";
import { HashingStream, VerifyingStream } from "../../../oci/digest.js";
import type { EntryType, LayerEntry } from "../../../oci/layer.js";
import type { OciLayout } from "../../../oci/layout.js";
import type { Descriptor } from "../../../oci/manifest.js";
import { decompressorForMediaType, type LayerCompression } from "../../../oci/layer-compression.js";
import type { ImageReference } from "../../../oci/reference.js";
import type { RegistryClient } from "../../../oci/registry/index.js";
import { readTar, type TarEntry, type TarEntryType } from "../../fs/tar-reader.js";
import type { LayerRecord } from "../../stage-state.js";

const TYPES: Partial<Record<TarEntryType, EntryType>> = {
  file: "file",
  link: "hardlink",
  symlink: "symlink",
  "character-device": "char",
  "block-device": "block",
  directory: "directory",
  fifo: "fifo",
};

function cleanPath(p: string): string {
  return p.replace(/^(\.?\/)+/, "").replace(/\/+$/, "");
}

/** A daemon tar entry as one of ours; undefined for the root itself. */
export function toLayerEntry(e: TarEntry): LayerEntry | undefined {
  const h = e.header;
  const path = cleanPath(h.name);
  if (path === "") return undefined;
  const type = TYPES[h.type];
  if (!type) {
    throw new OcibuildError("BUILDKIT_LAYER_INVALID", `the daemon's layer has an entry of unsupported tar type '${h.flag}': ${path}`);
  }
  const xattrs: Record<string, Buffer> = {};
  for (const [k, v] of h.pax) if (k.startsWith("SCHILY.xattr.")) xattrs[k.slice("SCHILY.xattr.".length)] = v;
  const out: LayerEntry = { path, type, mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, mtime: h.mtime };
  if (Object.keys(xattrs).length > 0) out.xattrs = xattrs;
  if (type === "file") {
    out.size = h.size;
    out.open = () => Readable.from(e.body);
  } else if (type === "symlink") out.linkname = h.linkname;
  else if (type === "hardlink") out.linkname = cleanPath(h.linkname);
  else if (type === "char" || type === "block") {
    out.devmajor = h.devmajor;
    out.devminor = h.devminor;
  }
  return out;
}

export interface ImportOptions {
  /** How the imported layer is written into the content store (gzip by default). */
  compression?: LayerCompression;
  compressionLevel?: number;
  sourceDateEpoch?: number;
  signal?: AbortSignal;
}

/**
 * Stream `desc` from `repo` into the content store as our layer, checking its
 * digest and the DiffID the daemon's config claims. Undefined for an empty diff.
 */
export async function importLayer(
  registry: RegistryClient,
  content: OciLayout,
  repo: ImageReference,
  desc: Descriptor,
  claimedDiffId: string,
  opts: ImportOptions = {},
): Promise<LayerRecord | undefined> {
  const { signal } = opts;
  const decompress = decompressorForMediaType(desc.mediaType);
  if (decompress === undefined) {
    throw new OcibuildError("BUILDKIT_LAYER_UNSUPPORTED", `the BuildKit daemon produced a layer of type ${desc.mediaType}; ocibuild reads gzip, zstd and uncompressed layers`, {
      details: { digest: desc.digest },
    });
  }
  const body = await registry.getBlob(repo, desc.digest, { size: desc.size, signal });
  const tarHash = new HashingStream();
  const verify = new VerifyingStream(desc.digest, desc.size);
  const piping = decompress ? pipeline(body, verify, decompress, tarHash, signal ? { signal } : {}) : pipeline(body, verify, tarHash, signal ? { signal } : {});
  piping.catch(() => {});
  // Our own iterator over the tar bytes: readTar stops at the end-of-archive
  // block, and the rest (padding) must still be read for the DiffID.
  const chunks = (async function* () {
    for await (const c of tarHash) yield c as Buffer;
  })();
  const view: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: () => chunks.next() }) };
  let count = 0;
  const entries = (async function* () {
    for await (const e of readTar(view)) {
      const le = toLayerEntry(e);
      if (!le) continue;
      count++;
      yield le;
    }
  })();
  let written;
  try {
    written = await content.writeLayer(entries, { compression: opts.compression, compressionLevel: opts.compressionLevel, sourceDateEpoch: opts.sourceDateEpoch, signal });
    for (;;) if ((await chunks.next()).done) break;
    await piping;
  } catch (e) {
    (body as Readable).destroy?.();
    if (signal?.aborted) throw new OcibuildError("BUILDKIT_ABORTED", "importing the daemon's layer was cancelled", { cause: e });
    if (e instanceof OcibuildError && e.code !== "LAYER_WRITE_FAILED") throw e;
    throw new OcibuildError("BUILDKIT_LAYER_INVALID", `the layer ${desc.digest} from the BuildKit daemon could not be read: ${(e as Error).message}`, { cause: e });
  }
  const diffId = `sha256:${tarHash.hexDigest}`;
  if (diffId !== claimedDiffId) {
    throw new OcibuildError("BUILDKIT_DIFFID_MISMATCH", `the layer ${desc.digest} from the BuildKit daemon decompresses to ${diffId}, but its config claims ${claimedDiffId}`, {
      details: { digest: desc.digest, claimed: claimedDiffId, actual: diffId },
    });
  }
  if (count === 0) return undefined;
  return {
    descriptor: { mediaType: written.mediaType, digest: written.digest, size: written.size },
    diffId: written.diffId,
    source: { kind: "local" },
  };
}
