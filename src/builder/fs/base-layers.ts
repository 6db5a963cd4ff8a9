/**
 * A base image's layers against its config's DiffIDs. A layer is checked where its
 * bytes are decompressed anyway (extraction hashes the tar: extract.ts) and, for a
 * layer that is pushed or written out without being extracted (`FROM x` + `LABEL`),
 * when its blob is first stored in the content store: decompressed and hashed as it
 * is written, once. Either way the result is recorded per blob digest
 * (CACHE/diffids/HEX holds the DiffID the blob was seen to decompress to), so later
 * builds check a layer by reading that record, not by decompressing it again; a
 * config that claims another DiffID for a recorded blob fails without any
 * decompression. Recording is best effort: a record that cannot be written only
 * means the blob is checked again next time.
 */
import { writeFileAtomic } from "../../fs-atomic.js";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { OcibuildError } from "../../errors.js";
import { hexOf, type Digest, type DiffID } from "../../oci/digest.js";
import { layerTooLarge } from "../../oci/layer-limit.js";
import { decompressorFor } from "./tar-reader.js";
import type { LayerRecord } from "../stage-state.js";

/** The DiffID each base blob was seen to decompress to, one small file per blob digest. */
export class DiffIdRecords {
  constructor(readonly dir: string) {}

  private path(digest: Digest): string {
    return join(this.dir, hexOf(digest));
  }

  async get(digest: Digest): Promise<string | undefined> {
    return (await readFile(this.path(digest), "utf8").catch(() => undefined))?.trim();
  }

  async set(digest: Digest, diffId: DiffID): Promise<void> {
    // A record is a shortcut, not a result: one that cannot be written is checked again next time.
    await writeFileAtomic(this.path(digest), diffId, { makeParent: true }).catch(() => {});
  }
}

/** How a layer is named in messages: its digest and, for a base layer, the image it comes from. */
export function layerName(layer: LayerRecord): string {
  return layer.source.kind === "registry" ? `${layer.descriptor.digest} of ${layer.source.ref}` : layer.descriptor.digest;
}

export function diffIdMismatch(layer: LayerRecord, actual: string): OcibuildError {
  return new OcibuildError("LAYER_DIFFID_MISMATCH", `layer ${layerName(layer)} decompresses to ${actual}, but the image's config says ${layer.diffId}`, {
    details: { digest: layer.descriptor.digest, expected: layer.diffId, actual, ...(layer.source.kind === "registry" ? { image: layer.source.ref } : {}) },
    hint: "the base image is broken (its config does not describe its layers); rebuild or re-push it",
  });
}

/**
 * A pass-through for a layer blob that decompresses and hashes it on the side and,
 * like VerifyingStream, holds back its last chunk until the end: a blob that does not
 * decompress to its DiffID (or beyond maxSize) fails the stream before a consumer
 * (the content store) has it all. `diffId` is set once the stream has ended cleanly.
 */
export class DiffIdCheck extends Transform {
  private head: Buffer[] = [];
  private inner?: NodeJS.ReadWriteStream | null;
  private innerEnded?: Promise<void>;
  private readonly hash = createHash("sha256");
  private size = 0;
  private held?: Buffer;
  private failure?: Error;
  diffId?: DiffID;

  constructor(
    private readonly layer: LayerRecord,
    private readonly maxSize?: number,
    /** Awaited once the DiffID matched, before the last chunk is released. */
    private readonly onChecked?: (diffId: DiffID) => Promise<void>,
  ) {
    super();
  }

  private fail(e: Error): void {
    this.failure ??= e instanceof OcibuildError ? e : new OcibuildError("LAYER_DECOMPRESS_FAILED", `cannot decompress layer ${layerName(this.layer)}: ${e.message}`, { cause: e });
    this.destroy(this.failure);
  }

  private counted(c: Buffer): void {
    this.hash.update(c);
    this.size += c.length;
    if (this.maxSize !== undefined && this.size > this.maxSize) this.fail(layerTooLarge(layerName(this.layer), this.maxSize));
  }

  /** Pick the decompressor from the first bytes (at least 6, or all there are at the end). */
  private start(): void {
    const head = Buffer.concat(this.head);
    this.head = [];
    this.inner = decompressorFor(head, this.layer.descriptor.mediaType);
    const inner = this.inner;
    if (inner !== null) {
      inner.on("data", (c: Buffer) => this.counted(c));
      inner.on("error", (e: Error) => this.fail(e));
      this.innerEnded = new Promise((resolve) => {
        inner.once("end", resolve);
        inner.once("close", resolve);
      });
    }
    this.feed(head, () => {});
  }

  private feed(data: Buffer, done: () => void): void {
    if (this.inner === null) {
      this.counted(data);
      return done();
    }
    if (this.inner!.write(data)) done();
    else this.inner!.once("drain", done);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.failure) return cb(this.failure);
    const previous = this.held;
    this.held = chunk;
    const pass = () => cb(null, previous);
    if (this.inner !== undefined) return this.feed(chunk, pass);
    this.head.push(chunk);
    if (this.head.reduce((n, b) => n + b.length, 0) < 6) return pass();
    try {
      this.start();
    } catch (e) {
      return cb(e as Error);
    }
    pass();
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (this.inner === undefined) this.start();
    } catch (e) {
      return cb(e as Error);
    }
    this.inner?.end();
    void (this.innerEnded ?? Promise.resolve()).then(() => {
      if (this.failure) return cb(this.failure);
      const actual = `sha256:${this.hash.digest("hex")}`;
      if (actual !== this.layer.diffId) return cb(diffIdMismatch(this.layer, actual));
      this.diffId = actual as DiffID;
      void (this.onChecked?.(this.diffId) ?? Promise.resolve()).then(
        () => cb(null, this.held),
        () => cb(null, this.held),
      );
    });
  }
}

/**
 * Whether a base layer's bytes must be checked on their way (true), or are known to
 * match its DiffID (false, from the record of its blob); a blob recorded with another
 * DiffID fails at once with LAYER_DIFFID_MISMATCH, before any byte is fetched.
 */
export async function needsDiffIdCheck(layer: LayerRecord, records: DiffIdRecords | undefined): Promise<boolean> {
  if (layer.source.kind !== "registry" || records === undefined) return false;
  const recorded = await records.get(layer.descriptor.digest);
  if (recorded === layer.diffId) return false;
  if (recorded !== undefined) throw diffIdMismatch(layer, recorded);
  return true;
}

/** `blob` (the layer's compressed bytes) through a DiffIdCheck; the blob's DiffID is recorded once it has passed. */
export function checkedBlob(layer: LayerRecord, blob: NodeJS.ReadableStream, records: DiffIdRecords, maxSize?: number): NodeJS.ReadableStream {
  // Recorded before the last chunk is released: the record exists by the time the reader is done.
  const check = new DiffIdCheck(layer, maxSize, (diffId) => records.set(layer.descriptor.digest, diffId));
  blob.on("error", (e: Error) => check.destroy(e));
  check.once("close", () => (blob as { destroy?: () => void }).destroy?.());
  return blob.pipe(check);
}
