/**
 * An OCI image layout directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`.
 * Every write goes to a temp file in the layout root (`.tmp-*`, same filesystem)
 * and is renamed into place, so a reader never sees a half-written blob or index,
 * and a failed or interrupted write leaves nothing behind. Blobs are verified
 * against their digest when written and when read.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { access, mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { type ErrorCode, OcibuildError, isOcibuildError } from "../errors.js";
import { makeDirs, removeQuietly } from "../user-path.js";
import { type Digest, HashingStream, VerifyingStream, algorithmOf, hexOf, isDigestString } from "./digest.js";
import { type LayerEntries, type LayerWriteOptions, type WrittenLayer, checkAborted, removeTemp, writeLayer } from "./layer.js";
import { type Descriptor, type ImageIndex, parseManifest } from "./manifest.js";
import { MediaType } from "./media-types.js";

export const LAYOUT_VERSION = "1.0.0";
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

/** Tag-like names the oci: transport accepts (containers/image rules: components of [A-Za-z0-9._-] joined by ':', '@', '/', '+'). */
const REF_RE = /^[A-Za-z0-9._-]+(?:[:@/+][A-Za-z0-9._-]+)*$/;

function tmpName(dir: string): string {
  return join(dir, `.tmp-${randomBytes(8).toString("hex")}`);
}

function ioError(code: ErrorCode, what: string, err: unknown, file: string): OcibuildError {
  if (isOcibuildError(err)) return err;
  return new OcibuildError(code, `${what}: ${(err as Error).message}`, { file, cause: err });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw ioError("LAYOUT_READ_FAILED", `cannot check ${path}`, err, path);
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === "ENOENT";
}

function abortedErr(signal: AbortSignal | undefined, err: unknown, what: string): OcibuildError | undefined {
  if (signal?.aborted || (err as { name?: string } | null)?.name === "AbortError") {
    return new OcibuildError("ABORTED", `${what} was interrupted`, { cause: signal?.reason ?? err });
  }
  return undefined;
}

/** Write `data` to `path` atomically (temp in `dir`, then rename). */
async function atomicWrite(dir: string, path: string, data: Uint8Array | string, signal?: AbortSignal): Promise<void> {
  const tmp = tmpName(dir);
  try {
    await writeFile(tmp, data, { flag: "wx", signal });
    await rename(tmp, path);
  } catch (err) {
    await removeQuietly(tmp);
    throw abortedErr(signal, err, `writing ${path}`) ?? ioError("LAYOUT_WRITE_FAILED", `cannot write ${path}`, err, path);
  }
}

export class OciLayout {
  private indexChain: Promise<unknown> = Promise.resolve();

  /** DIR/blobs; a blob's path is joined to it by hand (a checked digest's parts are plain names; path.join cost ~7 us a call). */
  private readonly blobs: string;

  private constructor(readonly dir: string) {
    this.blobs = join(dir, "blobs");
  }

  /** Creates the layout, or opens it if `dir` already holds one (its version must be 1.0.0). Refuses a non-empty directory that is not a layout. */
  static async create(dir: string, signal?: AbortSignal): Promise<OciLayout> {
    checkAborted(signal, "creating the OCI layout");
    const layout = new OciLayout(dir);
    if (await layout.readLayoutFile(signal)) {
      await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
      return layout;
    }
    try {
      await makeDirs(dir);
      // blobs/ and index.json without oci-layout are what an interrupted create leaves: carry on.
      // oci-layout itself may have appeared since the check above: a concurrent create finished.
      const existing = (await readdir(dir)).filter((n) => !n.startsWith(".tmp-") && n !== "blobs" && n !== "index.json" && n !== "oci-layout");
      if (existing.length > 0) {
        throw new OcibuildError("LAYOUT_DIR_NOT_EMPTY", `"${dir}" is not empty and is not an OCI layout (no oci-layout file)`, {
          file: dir,
          hint: "choose an empty or new directory for the OCI layout",
        });
      }
      await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
    } catch (err) {
      throw ioError("LAYOUT_WRITE_FAILED", `cannot create OCI layout "${dir}"`, err, dir);
    }
    if (!(await exists(join(dir, "index.json")))) {
      const empty: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] };
      await atomicWrite(dir, join(dir, "index.json"), `${JSON.stringify(empty)}\n`, signal);
    }
    // oci-layout last: its presence marks a complete layout.
    await atomicWrite(dir, join(dir, "oci-layout"), `${JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION })}\n`, signal);
    return layout;
  }

  /** Opens an existing layout: LAYOUT_NOT_FOUND if `dir` has no oci-layout file. */
  static async open(dir: string, signal?: AbortSignal): Promise<OciLayout> {
    checkAborted(signal, "opening the OCI layout");
    const layout = new OciLayout(dir);
    if (!(await layout.readLayoutFile(signal))) {
      throw new OcibuildError("LAYOUT_NOT_FOUND", `"${dir}" is not an OCI image layout (no oci-layout file)`, { file: dir });
    }
    return layout;
  }

  /** true if the oci-layout file exists and is valid; false if absent; throws if invalid. */
  private async readLayoutFile(signal?: AbortSignal): Promise<boolean> {
    const path = join(this.dir, "oci-layout");
    let text: string;
    try {
      text = await readFile(path, { encoding: "utf8", signal });
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException).code === "ENOTDIR") return false;
      throw abortedErr(signal, err, "reading oci-layout") ?? ioError("LAYOUT_READ_FAILED", `cannot read ${path}`, err, path);
    }
    let version: unknown;
    try {
      version = (JSON.parse(text) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch (err) {
      throw new OcibuildError("LAYOUT_INVALID", `${path} is not valid JSON`, { file: path, cause: err });
    }
    if (version !== LAYOUT_VERSION) {
      throw new OcibuildError("LAYOUT_VERSION_UNSUPPORTED", `${path} has imageLayoutVersion ${JSON.stringify(version)}; only ${LAYOUT_VERSION} is supported`, { file: path });
    }
    return true;
  }

  blobPath(d: Digest): string {
    if (!isDigestString(d)) throw new OcibuildError("DIGEST_INVALID", `invalid digest "${d}"`);
    return `${this.blobs}/${algorithmOf(d)}/${hexOf(d)}`;
  }

  /** Whether the blob is here, with one blocking call (false too when it cannot be told: ask hasBlob). */
  hasBlobNow(d: Digest): boolean {
    return existsSync(this.blobPath(d));
  }

  async hasBlob(d: Digest, signal?: AbortSignal): Promise<boolean> {
    checkAborted(signal, "checking a blob");
    try {
      await access(this.blobPath(d));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw ioError("LAYOUT_READ_FAILED", `cannot check blob ${d}`, err, this.blobPath(d));
    }
  }

  /**
   * Streams `src` to a temp file, hashing it, and renames it to its blob path.
   * With `expected`, the content must match (DIGEST_MISMATCH otherwise, nothing
   * kept), and a blob already present is not rewritten (a `src` stream is then
   * destroyed unread).
   *
   * `sourceVerified`: `src` is a stream that checks its own bytes against
   * `expected.digest` and fails instead of ending when they differ (as
   * RegistryClient.getBlob's does), so the blob is kept only if that check passed and
   * is not hashed a second time here (~45 ms of CPU for a 60 MB base layer); the size
   * is still checked.
   */
  async writeBlob(
    src: Uint8Array | NodeJS.ReadableStream,
    expected?: { digest: Digest; size?: number },
    signal?: AbortSignal,
    opts: { sourceVerified?: boolean } = {},
  ): Promise<{ digest: Digest; size: number }> {
    checkAborted(signal, "writing a blob");
    if (expected && (await this.hasBlob(expected.digest, signal))) {
      // Release the caller's stream (a file, an HTTP body) since it will not be read.
      if (!(src instanceof Uint8Array)) (src as { destroy?: () => void }).destroy?.();
      const size = src instanceof Uint8Array ? src.byteLength : (expected.size ?? (await stat(this.blobPath(expected.digest))).size);
      return { digest: expected.digest, size };
    }
    const algorithm = expected ? algorithmOf(expected.digest) : "sha256";
    const trusted = opts.sourceVerified === true && expected !== undefined && !(src instanceof Uint8Array);
    const digester = trusted ? undefined : new HashingStream(algorithm);
    const tmp = tmpName(this.dir);
    const source = src instanceof Uint8Array ? Readable.from([Buffer.from(src.buffer, src.byteOffset, src.byteLength)]) : src;
    const file = createWriteStream(tmp, { flags: "wx" });
    try {
      if (digester) await pipeline(source, digester, file, signal ? { signal } : {});
      else await pipeline(source, file, signal ? { signal } : {});
      const digest = digester ? (`${algorithm}:${digester.hexDigest}` as Digest) : expected!.digest;
      const size = digester ? digester.size : file.bytesWritten;
      if (expected && digest !== expected.digest) {
        throw new OcibuildError("DIGEST_MISMATCH", `blob content does not match its digest: expected ${expected.digest}, got ${digest}`, {
          details: { expected: expected.digest, actual: digest },
        });
      }
      if (expected?.size !== undefined && size !== expected.size) {
        throw new OcibuildError("DIGEST_MISMATCH", `blob ${digest} is ${size} bytes, expected ${expected.size}`);
      }
      await mkdir(join(this.dir, "blobs", algorithm), { recursive: true });
      await rename(tmp, this.blobPath(digest));
      return { digest, size };
    } catch (err) {
      await removeTemp(file, tmp);
      throw abortedErr(signal, err, "writing a blob") ?? ioError("LAYOUT_WRITE_FAILED", "cannot write blob", err, this.dir);
    }
  }

  /**
   * Writes a layer straight into the layout in one pass (tar -> gzip -> hashes ->
   * blob temp file -> rename to its digest). The layer writer's own digest names the
   * blob: the bytes are hashed once. On failure nothing is left; the layer writer's
   * error is the one reported.
   */
  async writeLayer(entries: LayerEntries, opts: LayerWriteOptions = {}): Promise<WrittenLayer> {
    const tmp = tmpName(this.dir);
    const file = createWriteStream(tmp, { flags: "wx" });
    let layer: WrittenLayer;
    try {
      layer = await writeLayer(entries, file, opts);
    } catch (err) {
      await removeTemp(file, tmp);
      throw err;
    }
    try {
      await rename(tmp, this.blobPath(layer.digest));
    } catch (err) {
      await rm(tmp, { force: true });
      throw ioError("LAYOUT_WRITE_FAILED", "cannot write blob", err, this.dir);
    }
    return layer;
  }

  /** The blob's bytes, verified against `d` while streaming (the stream errors with DIGEST_MISMATCH at the end if they differ). */
  readBlob(d: Digest, signal?: AbortSignal): NodeJS.ReadableStream {
    const path = this.blobPath(d);
    const verifier = new VerifyingStream(d);
    const file = createReadStream(path, signal ? { signal } : {});
    file.on("error", (err) => {
      verifier.destroy(
        isNotFound(err)
          ? new OcibuildError("LAYOUT_BLOB_NOT_FOUND", `blob ${d} is not in the layout ${this.dir}`, { file: path, cause: err })
          : (abortedErr(signal, err, `reading blob ${d}`) ?? ioError("LAYOUT_READ_FAILED", `cannot read blob ${d}`, err, path)),
      );
    });
    verifier.on("close", () => file.destroy());
    return file.pipe(verifier);
  }

  /** The whole blob, verified; for manifests and configs. */
  async readBlobBytes(d: Digest, signal?: AbortSignal): Promise<Uint8Array> {
    const path = this.blobPath(d);
    let bytes: Buffer;
    try {
      bytes = await readFile(path, { signal });
    } catch (err) {
      if (isNotFound(err)) throw new OcibuildError("LAYOUT_BLOB_NOT_FOUND", `blob ${d} is not in the layout ${this.dir}`, { file: path, cause: err });
      throw abortedErr(signal, err, `reading blob ${d}`) ?? ioError("LAYOUT_READ_FAILED", `cannot read blob ${d}`, err, path);
    }
    const got = `${algorithmOf(d)}:${createHash(algorithmOf(d)).update(bytes).digest("hex")}`;
    if (got !== d) {
      throw new OcibuildError("DIGEST_MISMATCH", `blob ${d} in ${this.dir} is corrupt: its content hashes to ${got}`, { file: path });
    }
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** The parsed index.json. */
  async index(signal?: AbortSignal): Promise<ImageIndex> {
    const path = join(this.dir, "index.json");
    let bytes: Buffer;
    try {
      bytes = await readFile(path, { signal });
    } catch (err) {
      if (isNotFound(err)) throw new OcibuildError("LAYOUT_INVALID", `${path} is missing`, { file: path, cause: err });
      throw abortedErr(signal, err, "reading index.json") ?? ioError("LAYOUT_READ_FAILED", `cannot read ${path}`, err, path);
    }
    let parsed;
    try {
      parsed = parseManifest(bytes, MediaType.OCI_INDEX);
    } catch (err) {
      throw new OcibuildError("LAYOUT_INVALID", `${path} is not a valid image index: ${(err as Error).message}`, { file: path, cause: err });
    }
    if (parsed.kind !== "index") throw new OcibuildError("LAYOUT_INVALID", `${path} is not an image index`, { file: path });
    return parsed.blob.parsed;
  }

  /**
   * Adds or replaces a manifest descriptor in index.json. With `refName`, sets the
   * org.opencontainers.image.ref.name annotation and drops any other entry with
   * that name; without, drops an unnamed entry with the same digest. Atomic;
   * concurrent calls on this object are serialised (not across processes).
   */
  addManifest(desc: Descriptor, refName?: string, signal?: AbortSignal): Promise<void> {
    const run = async (): Promise<void> => {
      checkAborted(signal, "updating index.json");
      if (refName !== undefined && !REF_RE.test(refName)) {
        throw new OcibuildError("LAYOUT_REF_INVALID", `invalid OCI layout reference name "${refName}"`, {
          hint: "use letters, digits and . _ - separated by : @ / +",
        });
      }
      const index = await this.index(signal);
      const entry: Descriptor = { ...desc };
      if (refName !== undefined) entry.annotations = { ...desc.annotations, [REF_NAME_ANNOTATION]: refName };
      const name = entry.annotations?.[REF_NAME_ANNOTATION];
      const kept = index.manifests.filter((m) => {
        const n = m.annotations?.[REF_NAME_ANNOTATION];
        return name !== undefined ? n !== name : !(n === undefined && m.digest === entry.digest);
      });
      const next: ImageIndex = { ...index, mediaType: index.mediaType ?? MediaType.OCI_INDEX, manifests: [...kept, entry] };
      await atomicWrite(this.dir, join(this.dir, "index.json"), `${JSON.stringify(next)}\n`, signal);
    };
    const p = this.indexChain.then(run, run);
    this.indexChain = p.catch(() => undefined);
    return p;
  }

  /**
   * Finds a manifest by ref name (tag) or digest; undefined if none. Without an
   * argument: the only manifest, undefined if there is none, LAYOUT_REF_AMBIGUOUS
   * if there are several.
   */
  async resolve(refOrDigest?: string, signal?: AbortSignal): Promise<Descriptor | undefined> {
    const { manifests } = await this.index(signal);
    if (refOrDigest === undefined || refOrDigest === "") {
      if (manifests.length > 1) {
        throw new OcibuildError("LAYOUT_REF_AMBIGUOUS", `the OCI layout ${this.dir} holds ${manifests.length} manifests; name one`, {
          hint: `use oci:${this.dir}:<tag>; tags here: ${manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION] ?? m.digest).join(", ")}`,
        });
      }
      return manifests[0];
    }
    if (isDigestString(refOrDigest)) return manifests.find((m) => m.digest === refOrDigest);
    return manifests.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === refOrDigest);
  }
}

/**
 * Parses "oci:DIR", "oci:DIR:REF" and "oci:DIR@sha256:<hex>". As in skopeo's oci:
 * transport, DIR ends at the first ':' (so it cannot contain one) and REF follows
 * containers/image's reference-name rules; "@<digest>" at the end selects by digest.
 */
export function parseLayoutRef(s: string): { dir: string; ref?: string } {
  if (!s.startsWith("oci:")) {
    throw new OcibuildError("LAYOUT_REF_INVALID", `"${s}" is not an OCI layout reference`, { hint: "write oci:DIR, oci:DIR:TAG or oci:DIR@sha256:DIGEST" });
  }
  const rest = s.slice("oci:".length);
  const at = /^([^:]*)@((?:sha256|sha512):[a-f0-9]+)$/.exec(rest);
  let dir: string;
  let ref: string | undefined;
  if (at) {
    dir = at[1]!;
    ref = at[2]!;
    if (!isDigestString(ref)) throw new OcibuildError("LAYOUT_REF_INVALID", `"${ref}" in "${s}" is not a valid digest`);
  } else {
    const colon = rest.indexOf(":");
    dir = colon < 0 ? rest : rest.slice(0, colon);
    ref = colon < 0 ? undefined : rest.slice(colon + 1);
    if (ref !== undefined && !REF_RE.test(ref)) {
      throw new OcibuildError("LAYOUT_REF_INVALID", `invalid reference name "${ref}" in "${s}"`, {
        hint: "a reference name is letters, digits and . _ - separated by : @ / +; a directory cannot contain ':'",
      });
    }
  }
  if (dir === "") throw new OcibuildError("LAYOUT_REF_INVALID", `"${s}" names no directory`, { hint: "write oci:DIR[:TAG]" });
  return ref === undefined ? { dir } : { dir, ref };
}
