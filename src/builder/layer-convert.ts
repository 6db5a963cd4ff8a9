/**
 * Layers stored in another compression than the build writes. As BuildKit's
 * `compression` output option: the layers a build makes are in the asked
 * compression whether they were just built or come from the cache (an entry written
 * by a gzip build is not a zstd layer), and with `force-compression` the base
 * image's layers too. The step is not run again and the tar is not rebuilt: the
 * stored blob is decompressed, checked against its DiffID and compressed again, in
 * one pass. Each conversion is recorded per (blob, compression, level) under
 * CACHE/converted, so the next build reuses the converted blob instead of redoing it.
 * Foreign layers (and anything whose compression is unknown) are never converted.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OcibuildError, isOcibuildError } from "../errors.js";
import { writeFileAtomic } from "../fs-atomic.js";
import { HashingStream, hexOf, type Digest } from "../oci/digest.js";
import { defaultLevel } from "../oci/layer.js";
import { checkLevel, compressionOf, compressionStage, decompressorForMediaType, LAYER_COMPRESSIONS, layerMediaType, type LayerCompression } from "../oci/layer-compression.js";
import { LayerSizeLimit } from "../oci/layer-limit.js";
import type { OciLayout } from "../oci/layout.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { diffIdMismatch, layerName } from "./fs/base-layers.js";
import type { LayerRecord, StageState } from "./stage-state.js";

export interface ConvertOptions {
  content: OciLayout;
  registry: RegistryClient;
  /** Where conversions are recorded (CACHE/converted). */
  dir: string;
  compression: LayerCompression;
  level: number;
  maxLayerSize?: number;
  signal?: AbortSignal;
  onLog?: (message: string) => void;
}

/** Converts layers to one compression and level; owned by one build. */
export class LayerConverter {
  constructor(private readonly opts: ConvertOptions) {}

  get compression(): LayerCompression {
    return this.opts.compression;
  }

  /** Whether `layer` is stored in another (known) compression than the build writes. */
  needs(layer: LayerRecord): boolean {
    const c = compressionOf(layer.descriptor.mediaType);
    return c !== undefined && c !== this.opts.compression;
  }

  /** `layer` in the build's compression: itself when it already is, else converted (or the recorded conversion). */
  async convert(layer: LayerRecord): Promise<LayerRecord> {
    if (!this.needs(layer)) return layer;
    const record = join(this.opts.dir, `${hexOf(layer.descriptor.digest)}-${this.opts.compression}-${this.opts.level}`);
    const known = await this.recorded(record);
    if (known) return this.converted(layer, known);
    const done = await this.recompress(layer);
    // A record is a shortcut: one that cannot be written only means converting again next time.
    await writeFileAtomic(record, `${done.digest} ${done.size}`, { makeParent: true }).catch(() => {});
    this.opts.onLog?.(`layer ${layerName(layer)} (${compressionOf(layer.descriptor.mediaType)}) re-compressed as ${this.opts.compression}: ${done.digest}`);
    return this.converted(layer, done);
  }

  /** Every layer of `state` in the build's compression (force-compression). */
  async convertAll(state: StageState): Promise<StageState> {
    if (!state.layers.some((l) => this.needs(l))) return state;
    const layers: LayerRecord[] = [];
    for (const l of state.layers) layers.push(await this.convert(l));
    return { ...state, layers };
  }

  private async recorded(path: string): Promise<{ digest: Digest; size: number } | undefined> {
    const m = /^(sha256:[a-f0-9]{64}) (\d+)$/.exec((await readFile(path, "utf8").catch(() => "")).trim());
    if (!m) return undefined;
    const digest = m[1] as Digest;
    return (await this.opts.content.hasBlob(digest, this.opts.signal)) ? { digest, size: Number(m[2]) } : undefined;
  }

  private converted(layer: LayerRecord, blob: { digest: Digest; size: number }): LayerRecord {
    const out: LayerRecord = { descriptor: { mediaType: layerMediaType(this.opts.compression), digest: blob.digest, size: blob.size }, diffId: layer.diffId, source: { kind: "local" } };
    return layer.dir === undefined ? out : { ...out, dir: layer.dir };
  }

  private async open(layer: LayerRecord): Promise<NodeJS.ReadableStream> {
    const { content, registry, signal } = this.opts;
    const { digest, size } = layer.descriptor;
    if (await content.hasBlob(digest, signal)) return content.readBlob(digest, signal);
    if (layer.source.kind !== "registry") {
      throw new OcibuildError("BUILD_LAYER_MISSING", `layer ${digest} is missing from the content store ${content.dir}`);
    }
    return registry.getBlob(parseReference(layer.source.ref), digest, { size, signal });
  }

  /** Blob -> decompress -> (size limit) -> DiffID hash -> compress -> content store, in one pass. */
  private async recompress(layer: LayerRecord): Promise<{ digest: Digest; size: number }> {
    const { content, signal, maxLayerSize } = this.opts;
    const decompress = decompressorForMediaType(layer.descriptor.mediaType);
    const compress = compressionStage(this.opts.compression, this.opts.level);
    const tarHash = new HashingStream();
    const out = new PassThrough();
    // Streams and, for the compression, a pipeline stage function (pipeline takes both).
    const stages: unknown[] = [await this.open(layer)];
    if (decompress) stages.push(decompress);
    if (maxLayerSize !== undefined) stages.push(new LayerSizeLimit(maxLayerSize, layerName(layer)));
    stages.push(tarHash);
    if (compress) stages.push(compress);
    stages.push(out);
    const piped = pipeline(stages as NodeJS.ReadableStream[], signal ? { signal } : {});
    const [p, w] = await Promise.allSettled([piped, content.writeBlob(out, undefined, signal)]);
    if (p.status === "rejected") throw this.failed(layer, p.reason);
    if (w.status === "rejected") throw w.reason;
    const actual = `sha256:${tarHash.hexDigest}`;
    if (actual !== layer.diffId) throw diffIdMismatch(layer, actual);
    return w.value;
  }

  private failed(layer: LayerRecord, e: unknown): unknown {
    if (this.opts.signal?.aborted) return new OcibuildError("ABORTED", "re-compressing a layer was interrupted", { cause: this.opts.signal.reason });
    if (isOcibuildError(e)) return e;
    return new OcibuildError("LAYER_DECOMPRESS_FAILED", `cannot decompress layer ${layerName(layer)}: ${(e as Error).message}`, { cause: e });
  }
}

/** The build's layer compression and level from its options, checked (LAYER_OPTIONS_INVALID). */
export function layerFormat(opts: { compression?: LayerCompression; compressionLevel?: number }): { compression: LayerCompression; level: number } {
  const compression = opts.compression ?? "gzip";
  if (!LAYER_COMPRESSIONS.includes(compression)) {
    throw new OcibuildError("LAYER_OPTIONS_INVALID", `layer compression "${String(compression)}" is not one of ${LAYER_COMPRESSIONS.join(", ")}`);
  }
  const level = opts.compressionLevel ?? defaultLevel(compression);
  checkLevel(compression, level);
  return { compression, level };
}
