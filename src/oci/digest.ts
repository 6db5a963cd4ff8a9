import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { OcibuildError } from "../errors.js";

declare const digestBrand: unique symbol;
declare const diffIdBrand: unique symbol;

/** Digest of a blob as stored and transferred (a compressed layer, a manifest, a config). */
export type Digest = string & { readonly [digestBrand]: true };
/** Digest of an uncompressed layer tar (rootfs.diff_ids). Never interchangeable with Digest. */
export type DiffID = string & { readonly [diffIdBrand]: true };

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const SHA512_RE = /^sha512:[a-f0-9]{128}$/;
const GENERIC_RE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function isDigestString(s: string): boolean {
  return SHA256_RE.test(s) || SHA512_RE.test(s);
}

function check(s: string, what: string): void {
  if (isDigestString(s)) return;
  if (GENERIC_RE.test(s) && !s.startsWith("sha256:") && !s.startsWith("sha512:")) {
    throw new OcibuildError("DIGEST_UNSUPPORTED", `unsupported digest algorithm in ${what} "${s}" (sha256 and sha512 are supported)`);
  }
  throw new OcibuildError("DIGEST_INVALID", `invalid ${what} "${s}": expected sha256:<64 lowercase hex>`);
}

export function parseDigest(s: string): Digest {
  check(s, "digest");
  return s as Digest;
}

export function parseDiffID(s: string): DiffID {
  check(s, "diff ID");
  return s as DiffID;
}

/** The algorithm part ("sha256"). */
export function algorithmOf(d: Digest | DiffID): string {
  return d.slice(0, d.indexOf(":"));
}

/** The hex part of a digest. */
export function hexOf(d: Digest | DiffID): string {
  return d.slice(d.indexOf(":") + 1);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export function digestOf(data: Uint8Array | string): Digest {
  return `sha256:${sha256Hex(data)}` as Digest;
}

export function diffIdOf(data: Uint8Array | string): DiffID {
  return `sha256:${sha256Hex(data)}` as DiffID;
}

/**
 * A pass-through stream that hashes and counts what flows through it.
 * After 'finish'/'end', `digest` and `size` are set.
 */
export class HashingStream extends Transform {
  private readonly hash: Hash;
  size = 0;
  private hex?: string;

  /** `onEnd`: called with the digest and size as soon as the last input byte is hashed (the output may still be on its way downstream). */
  constructor(
    readonly algorithm = "sha256",
    private readonly onEnd?: (hex: string, size: number) => void,
  ) {
    super();
    this.hash = createHash(algorithm);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.hex = this.hash.digest("hex");
    this.onEnd?.(this.hex, this.size);
    cb();
  }

  /** Hex digest of everything that passed; throws if read before the stream ended. */
  get hexDigest(): string {
    if (this.hex === undefined) throw new Error("HashingStream: digest read before end of stream");
    return this.hex;
  }
}

/**
 * A pass-through that fails the stream if the bytes do not match `expected` (and
 * `expectedSize`). It holds back the last chunk it has seen until the end, so a
 * consumer never receives the whole content before it is verified: an upload fed
 * from it is cut short on a mismatch instead of reaching its declared length (a
 * registry that does not re-hash would otherwise commit the wrong bytes).
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private held?: Buffer;
  size = 0;
  constructor(
    readonly expected: Digest,
    readonly expectedSize?: number,
  ) {
    super();
    this.hash = createHash(algorithmOf(expected));
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    if (this.expectedSize !== undefined && this.size > this.expectedSize) {
      cb(new OcibuildError("DIGEST_MISMATCH", `content of ${this.expected} is larger than the expected ${this.expectedSize} bytes`));
      return;
    }
    const previous = this.held;
    this.held = chunk;
    cb(null, previous);
  }
  override _flush(cb: TransformCallback): void {
    const got = `${algorithmOf(this.expected)}:${this.hash.digest("hex")}`;
    if (got !== this.expected) {
      cb(new OcibuildError("DIGEST_MISMATCH", `content does not match its digest: expected ${this.expected}, got ${got}`));
      return;
    }
    if (this.expectedSize !== undefined && this.size !== this.expectedSize) {
      cb(new OcibuildError("DIGEST_MISMATCH", `content of ${this.expected} is ${this.size} bytes, expected ${this.expectedSize}`));
      return;
    }
    cb(null, this.held);
  }
}
