/**
 * The most bytes one layer may decompress to (the library's `maxLayerSize`, the
 * CLI's --max-layer-size). A base image's layers are not ours: a small gzip or
 * zstd blob can expand to terabytes, and without a bound extraction would fill
 * the disk. Unset, layers are not bounded.
 */
import { Transform, type TransformCallback } from "node:stream";
import { OcibuildError, optionWords } from "../errors.js";

function human(n: number): string {
  for (const [unit, size] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} bytes`;
}

/** LAYER_TOO_LARGE for the layer `layer` (its digest) against `limit` bytes. */
export function layerTooLarge(layer: string, limit: number): OcibuildError {
  return new OcibuildError("LAYER_TOO_LARGE", `layer ${layer} decompresses to more than ${human(limit)}, the maximum layer size`, {
    details: { layer, limit },
    hint: `raise ${optionWords("maxLayerSize")} if the layer is genuine`,
  });
}

/** A pass-through that fails with LAYER_TOO_LARGE once more than `limit` bytes have gone through. */
export class LayerSizeLimit extends Transform {
  private seen = 0;
  constructor(
    private readonly limit: number,
    private readonly layer: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) cb(layerTooLarge(this.layer, this.limit));
    else cb(null, chunk);
  }
}
