/**
 * SBOM generation (`--sbom`): an SPDX 2.3 document of what an image's final
 * filesystem holds, made natively from the layers the build already has, with
 * no scanner image. Each layer is read once, in order, as a stream (gzip, plain,
 * or zstd where Node has it); only package metadata files are buffered (capped),
 * executables are streamed through the Go build-info reader.
 *
 * Found: Debian/Ubuntu packages (/var/lib/dpkg/status, status.d/*; licence from
 * a DEP-5 /usr/share/doc/NAME/copyright), Alpine packages (/lib/apk/db/installed),
 * Python distributions (*.dist-info/METADATA, *.egg-info/PKG-INFO), npm packages
 * (node_modules/[@scope/]NAME/package.json) and Go binaries (their build info:
 * main module, dependencies, toolchain as `stdlib`), each with its purl and the
 * layer that added it. Any stage's layers can be given, not only the final one
 * (BUILDKIT_SBOM_SCAN_STAGE).
 */
import type { Readable } from "node:stream";
import { OcibuildError } from "../errors.js";
import { tarBytes } from "../builder/fs/tar-reader.js";
import { VERSION } from "../version.js";
import type { SbomLayerRef, SbomPackage } from "./sbom-model.js";
import { aborted, layerUnreadable, SbomScanner } from "./sbom-scan.js";
import { spdxDocument, type SpdxDocument } from "./sbom-spdx.js";

export type { SbomLayerRef, SbomPackage, SbomPackageType } from "./sbom-model.js";
export { SbomScanner } from "./sbom-scan.js";
export {
  IN_TOTO_STATEMENT_V01, IN_TOTO_STATEMENT_V1, SPDX_PREDICATE_TYPE, sbomStatement, spdxDocument,
  type InTotoStatement, type InTotoSubject, type SpdxDocument,
} from "./sbom-spdx.js";

/** One layer of the image (or stage), bottom first. */
export interface SbomLayer extends SbomLayerRef {
  /** The blob's media type; the compression is sniffed from the bytes either way. */
  mediaType?: string;
  /** The layer blob (compressed or not), read once. */
  open(signal?: AbortSignal): NodeJS.ReadableStream | Promise<NodeJS.ReadableStream>;
}

export interface SbomOptions {
  /** The document's name and its root package's: the image reference, or the scanned stage's name. */
  name: string;
  /** Seconds since the epoch (SOURCE_DATE_EPOCH): the document's `created`; the current time without it. */
  sourceDateEpoch?: number;
  /** More inputs for the deterministic document namespace (the image's manifest digest, say). */
  namespaceSeed?: readonly string[];
  /** The image's purl, put on the root package. */
  imagePurl?: string;
  signal?: AbortSignal;
  /** Called for each metadata file skipped (too large, not JSON). */
  onWarning?: (msg: string) => void;
}

export interface SbomResult {
  /** The SPDX 2.3 JSON document (the in-toto predicate). */
  document: SpdxDocument;
  /** What was found, in the document's order. */
  packages: SbomPackage[];
}

/** Feed one layer blob through the scanner; a failing stream fails with the layer named. */
async function scanLayer(scanner: SbomScanner, layer: SbomLayer, signal: AbortSignal | undefined): Promise<void> {
  let raw: NodeJS.ReadableStream | undefined;
  let tar: Readable | undefined;
  const onAbort = () => tar?.destroy(aborted());
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal?.aborted) throw aborted();
    raw = await layer.open(signal);
    tar = await tarBytes(raw, layer.mediaType);
    if (signal?.aborted) throw aborted();
    await scanner.addLayerTar(tar);
  } catch (e) {
    if (signal?.aborted) throw e instanceof OcibuildError && e.code === "ABORTED" ? e : aborted(e);
    throw layerUnreadable(layer.digest ?? layer.diffId, e);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    tar?.destroy();
    // A plain tar's source is not destroyed with the stream tarBytes made of it.
    (raw as Partial<Readable> | undefined)?.destroy?.();
  }
}

/**
 * The SBOM of the filesystem that `layers` (bottom first) make: one pass over
 * each layer, whiteouts applied, every package related to the layer that added it.
 */
export async function generateSbom(layers: readonly SbomLayer[], opts: SbomOptions): Promise<SbomResult> {
  if (opts.sourceDateEpoch !== undefined && !(Number.isSafeInteger(opts.sourceDateEpoch) && opts.sourceDateEpoch >= 0)) {
    throw new OcibuildError("SBOM_OPTIONS_INVALID", `the sourceDateEpoch option (${opts.sourceDateEpoch}) must be a whole number of seconds, 0 or more`);
  }
  const scanner = new SbomScanner({ signal: opts.signal, onWarning: opts.onWarning });
  for (const layer of layers) await scanLayer(scanner, layer, opts.signal);
  const packages = scanner.packages();
  const created = opts.sourceDateEpoch === undefined ? new Date() : new Date(opts.sourceDateEpoch * 1000);
  const refs = layers.map((l) => ({ diffId: l.diffId, digest: l.digest }));
  const document = spdxDocument(packages, refs, {
    name: opts.name, created, tool: `ocibuild-${VERSION}`, namespaceSeed: opts.namespaceSeed, imagePurl: opts.imagePurl,
  });
  return { document, packages };
}
