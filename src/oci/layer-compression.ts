/**
 * Layer compressions: which media type each is written with, which a media type
 * says a blob has, and the streams that undo them. gzip and uncompressed are
 * node:zlib's and nothing; zstd is layer-zstd.ts's.
 */
import { zlib } from "../builtins.js";
import { OcibuildError } from "../errors.js";
import { MediaType } from "./media-types.js";
import { gzipMembers } from "./layer-gzip.js";
import { MAX_ZSTD_LEVEL, zstdFrames } from "./layer-zstd.js";
import { zstdDecompressor } from "./zstd-decompress.js";

/** How a layer's tar is stored: buildx's compression= values (estargz aside). */
export type LayerCompression = "gzip" | "zstd" | "uncompressed";

export const LAYER_COMPRESSIONS: readonly LayerCompression[] = ["gzip", "zstd", "uncompressed"];

/** The OCI media type a layer of this compression is written with. */
export function layerMediaType(c: LayerCompression): string {
  return c === "gzip" ? MediaType.OCI_LAYER_GZIP : c === "zstd" ? MediaType.OCI_LAYER_ZSTD : MediaType.OCI_LAYER;
}

const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar";

/** The compression a layer media type says its blob has; undefined for anything else (foreign layers included). */
export function compressionOf(mediaType: string): LayerCompression | undefined {
  switch (mediaType) {
    case MediaType.OCI_LAYER_GZIP:
    case MediaType.DOCKER_LAYER_GZIP:
      return "gzip";
    case MediaType.OCI_LAYER_ZSTD:
      return "zstd";
    case MediaType.OCI_LAYER:
    case DOCKER_LAYER:
      return "uncompressed";
    default:
      return undefined;
  }
}

/** The levels a compression takes, as text for messages ("0-9"). */
export function levelRange(c: LayerCompression): string {
  return c === "zstd" ? `0-${MAX_ZSTD_LEVEL}` : "0-9";
}

/** Whether `level` is one `c` takes: gzip 0-9, zstd 0-22 (0: zstd's default), uncompressed any (it is unused). */
export function validLevel(c: LayerCompression, level: number): boolean {
  if (c === "uncompressed") return true;
  return Number.isInteger(level) && level >= 0 && level <= (c === "zstd" ? MAX_ZSTD_LEVEL : 9);
}

/** Throws LAYER_OPTIONS_INVALID unless `level` fits `c`. */
export function checkLevel(c: LayerCompression, level: number): void {
  if (!validLevel(c, level)) throw new OcibuildError("LAYER_OPTIONS_INVALID", `${c} compression level ${level} is not an integer from ${levelRange(c)}`);
}

/**
 * A stream that turns a blob of this media type into its tar: null for an
 * uncompressed layer, undefined for a media type that is no layer compression this
 * knows (the caller refuses it with its own code).
 */
export function decompressorForMediaType(mediaType: string): NodeJS.ReadWriteStream | null | undefined {
  const c = compressionOf(mediaType);
  if (c === undefined) return undefined;
  if (c === "uncompressed") return null;
  return c === "gzip" ? zlib().createGunzip({ chunkSize: 256 * 1024 }) : zstdDecompressor();
}

/**
 * The pipeline stage that compresses a tar stream the layer writer's way (gzip
 * members, zstd frames, in parallel), or undefined for uncompressed.
 */
export function compressionStage(c: LayerCompression, level: number): ReturnType<typeof gzipMembers> | undefined {
  return c === "gzip" ? gzipMembers(level) : c === "zstd" ? zstdFrames(level) : undefined;
}
