/**
 * zstd layers: the writer's bytes are what the definition says (each
 * ZSTD_FRAME_BYTES piece of the tar compressed on its own as one frame, in order),
 * whatever the number in flight; zstd(1) reads them back to the exact tar; the same
 * entries give the same digest; fzstd (the decompressor on a Node without zstd)
 * reads zstd(1)'s single-frame streams and our multi-frame ones alike.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { Encoder } from "@toondepauw/node-zstd";
import { describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { type LayerEntry, tarChunks, writeLayer } from "../../src/oci/layer.js";
import { compressionOf, decompressorForMediaType, layerMediaType } from "../../src/oci/layer-compression.js";
import { ZSTD_FRAME_BYTES, zstdFrames } from "../../src/oci/layer-zstd.js";
import { fzstdDecompressor, zstdDecompressor } from "../../src/oci/zstd-decompress.js";
import { ZstdFrameStream } from "../../src/oci/zstd-frames.js";
import { MediaType } from "../../src/oci/media-types.js";

const haveZstd = existsSync("/usr/bin/zstd");
const T = new Date("2021-03-04T05:06:07Z");
const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

class Sink extends Writable {
  parts: Buffer[] = [];
  override _write(chunk: Buffer, _e: BufferEncoding, cb: () => void): void {
    this.parts.push(chunk);
    cb();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

/** Text-like content that compresses (words over a small vocabulary), deterministic. */
function corpus(size: number, seed: number): Buffer {
  const words = ["layer", "zstd", "frame", "tar", "ocibuild", "\n", "0123456789", "registry", " "];
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  let o = 0;
  while (o < size) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    o += out.write(words[(x >>> 0) % words.length]!, o);
  }
  return out;
}

/** A layer of `files` files of `each` bytes. */
function entries(files: number, each: number, seed = 1): LayerEntry[] {
  const base = { uid: 0, gid: 0, mtime: T };
  const out: LayerEntry[] = [{ ...base, path: "data", type: "directory", mode: 0o755 }];
  for (let i = 0; i < files; i++) {
    const b = corpus(each, seed + i);
    out.push({ ...base, path: `data/f${i}`, type: "file", mode: 0o644, size: b.length, open: () => Readable.from([b]) });
  }
  return out;
}

describe("zstd layers", () => {
  it("are written with the OCI zstd media type; the digest is the blob's, the DiffID the tar's", async () => {
    const tar = await collect(tarChunks(entries(3, 50_000)));
    const sink = new Sink();
    const w = await writeLayer(entries(3, 50_000), sink, { compression: "zstd" });
    expect(w.mediaType).toBe(MediaType.OCI_LAYER_ZSTD);
    expect(w.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+zstd");
    expect(w.digest).toBe(sha256(sink.bytes));
    expect(w.size).toBe(sink.bytes.length);
    expect(w.diffId).toBe(sha256(tar));
    expect(w.uncompressedSize).toBe(tar.length);
    expect(sink.bytes.readUInt32LE(0)).toBe(0xfd2fb528);
    expect(w.size).toBeLessThan(tar.length / 2);
  });

  it.skipIf(!haveZstd)("zstd(1) decompresses a multi-frame layer to the exact tar, one frame per 4 MiB of tar", async () => {
    const tar = await collect(tarChunks(entries(10, 1_000_000)));
    const sink = new Sink();
    await writeLayer(entries(10, 1_000_000), sink, { compression: "zstd" });
    const out = execFileSync("zstd", ["-d", "-c"], { input: sink.bytes, maxBuffer: 64 << 20 });
    expect(sha256(out)).toBe(sha256(tar));
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-zstd-"));
    await writeFile(join(dir, "layer.zst"), sink.bytes);
    const info = execFileSync("zstd", ["-l", "-v", join(dir, "layer.zst")], { encoding: "utf8" }).toString();
    await rm(dir, { recursive: true, force: true });
    expect(Number(/Zstandard Frames: (\d+)/.exec(info)?.[1])).toBe(Math.ceil(tar.length / ZSTD_FRAME_BYTES));
  });

  it("is each piece of the tar compressed alone, concatenated, whatever the number in flight", async () => {
    const tar = await collect(tarChunks(entries(10, 1_000_000)));
    const enc = new Encoder(3);
    const expected: Buffer[] = [];
    for (let o = 0; o < tar.length; o += ZSTD_FRAME_BYTES) expected.push(await enc.encode(tar.subarray(o, o + ZSTD_FRAME_BYTES)));
    const one = await collect(zstdFrames(3, ZSTD_FRAME_BYTES, 1)(Readable.from([tar])));
    const three = await collect(zstdFrames(3, ZSTD_FRAME_BYTES, 3)(Readable.from(tarChunks(entries(10, 1_000_000)))));
    expect(one.equals(Buffer.concat(expected))).toBe(true);
    expect(three.equals(one)).toBe(true);
  });

  it("the same entries give the same digest; another level another digest, the same DiffID", async () => {
    const a = await writeLayer(entries(5, 300_000), new Sink(), { compression: "zstd" });
    const b = await writeLayer(entries(5, 300_000), new Sink(), { compression: "zstd" });
    const c = await writeLayer(entries(5, 300_000), new Sink(), { compression: "zstd", compressionLevel: 19 });
    expect(b.digest).toBe(a.digest);
    expect(c.digest).not.toBe(a.digest);
    expect(c.diffId).toBe(a.diffId);
    expect(c.size).toBeLessThan(a.size);
  });

  it("refuses a level zstd does not have, with a coded error", async () => {
    const e = await writeLayer(entries(1, 10), new Sink(), { compression: "zstd", compressionLevel: 23 }).catch((x: unknown) => x);
    expect(isOcibuildError(e) && e.code).toBe("LAYER_OPTIONS_INVALID");
    const g = await writeLayer(entries(1, 10), new Sink(), { compression: "gzip", compressionLevel: 10 }).catch((x: unknown) => x);
    expect(isOcibuildError(g) && g.code).toBe("LAYER_OPTIONS_INVALID");
  });

  it("an uncompressed layer is the tar itself: digest = DiffID", async () => {
    const tar = await collect(tarChunks(entries(2, 1000)));
    const sink = new Sink();
    const w = await writeLayer(entries(2, 1000), sink, { compression: "uncompressed" });
    expect(w.mediaType).toBe(MediaType.OCI_LAYER);
    expect(sink.bytes.equals(tar)).toBe(true);
    expect(w.digest).toBe(w.diffId);
  });

  it("media types map to compressions and back", () => {
    for (const c of ["gzip", "zstd", "uncompressed"] as const) expect(compressionOf(layerMediaType(c))).toBe(c);
    expect(compressionOf(MediaType.DOCKER_LAYER_GZIP)).toBe("gzip");
    expect(compressionOf(MediaType.DOCKER_FOREIGN_LAYER_GZIP)).toBeUndefined();
    expect(decompressorForMediaType("application/vnd.oci.image.layer.v1.tar+bzip2")).toBeUndefined();
    expect(decompressorForMediaType(MediaType.OCI_LAYER)).toBeNull();
  });
});

describe("fzstd, the decompressor on a Node without zstd", () => {
  const decode = async (input: Buffer, piece: number) => {
    const parts: Buffer[] = [];
    for (let o = 0; o < input.length; o += piece) parts.push(input.subarray(o, o + piece));
    const sink = new Sink();
    await pipeline(Readable.from(parts), fzstdDecompressor(), sink);
    return sink.bytes;
  };

  it.skipIf(!haveZstd)("reads zstd(1)'s one-frame stream of unknown size, fed in odd-sized chunks", async () => {
    const data = corpus(3_000_000, 7);
    // From a pipe, zstd(1) writes one frame without a content size, as Go's encoders do.
    const z = execFileSync("sh", ["-c", "cat | zstd -3 -q -c"], { input: data, maxBuffer: 64 << 20 });
    for (const piece of [4099, 65536, z.length]) expect((await decode(z, piece)).equals(data)).toBe(true);
  }, 60_000);

  it("reads the writer's multi-frame layers", async () => {
    const tar = await collect(tarChunks(entries(10, 1_000_000)));
    const z = await collect(zstdFrames(3)(Readable.from([tar])));
    expect((await decode(z, 100_003)).equals(tar)).toBe(true);
  });

  it("fails on a truncated stream instead of ending early", async () => {
    const z = await collect(zstdFrames(3)(Readable.from([corpus(200_000, 3)])));
    await expect(decode(z.subarray(0, z.length - 10), 4096)).rejects.toThrow(/invalid zstd data/);
  });
});

describe("zstd decoded frame by frame (how node:zlib's one-frame decoder is used)", () => {
  /** Per-frame decoders: fzstd's here (Node 20 has no zstd); node:zlib's where zstdDecompressor uses them. */
  const decode = async (input: Buffer, piece: number, frameDecoder = fzstdDecompressor) => {
    const parts: Buffer[] = [];
    for (let o = 0; o < input.length; o += piece) parts.push(input.subarray(o, o + piece));
    const sink = new Sink();
    await pipeline(Readable.from(parts), new ZstdFrameStream(frameDecoder), sink);
    return sink.bytes;
  };
  const skippable = Buffer.concat([Buffer.from([0x5a, 0x2a, 0x4d, 0x18, 5, 0, 0, 0]), Buffer.from("skip!")]);

  it("every frame of the writer's layers, with skippable frames between them, in chunks of any size", async () => {
    const tar = await collect(tarChunks(entries(3, 1_000_000)));
    const z = await collect(zstdFrames(3, 1_000_000)(Readable.from([tar])));
    const withSkip = Buffer.concat([skippable, z]);
    for (const piece of [3, 4097, 1 << 20]) expect((await decode(withSkip, piece)).equals(tar)).toBe(true);
    // One byte at a time, on small frames with a skippable one between them.
    const small = await collect(zstdFrames(3, 300)(Readable.from([corpus(2000, 9)])));
    expect((await decode(Buffer.concat([small, skippable, small]), 1)).equals(Buffer.concat([corpus(2000, 9), corpus(2000, 9)]))).toBe(true);
  });

  it.skipIf(!haveZstd)("zstd(1)'s frames with checksums, of unknown and known size", async () => {
    const data = corpus(1_500_000, 11);
    const a = execFileSync("sh", ["-c", "cat | zstd -q -c"], { input: data, maxBuffer: 64 << 20 });
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-zstd-"));
    await writeFile(join(dir, "d"), data);
    const b = execFileSync("zstd", ["-q", "-c", "-19", join(dir, "d")], { maxBuffer: 64 << 20 });
    await rm(dir, { recursive: true, force: true });
    expect((await decode(Buffer.concat([a, b]), 65536)).equals(Buffer.concat([data, data]))).toBe(true);
  }, 60_000);

  it("fails on input that ends inside a frame, on what is no frame, and on no frame at all", async () => {
    const z = await collect(zstdFrames(3, 50_000)(Readable.from([corpus(200_000, 3)])));
    for (const cut of [z.length - 1, z.length - 9, 6]) await expect(decode(z.subarray(0, cut), 4096)).rejects.toThrow(/invalid zstd data/);
    await expect(decode(Buffer.concat([z, Buffer.from("garbage!")]), 4096)).rejects.toThrow(/not a frame/);
    await expect(decode(skippable, 4096)).rejects.toThrow(/no frame/);
  });

  it("refuses a frame that asks for a window above 128 MiB before any decoder allocates it", async () => {
    // magic, descriptor (no single segment), window descriptor, one raw last block of 1 byte.
    const frame = (windowLog: number) => Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3, 0x09, 0x00, 0x00, 0x78]);
    expect((await decode(frame(20), 4096)).toString()).toBe("x");
    await expect(decode(frame(28), 4096)).rejects.toThrow(/needs a 256 MiB window, more than the 128 MiB allowed/);
    await expect(pipeline(Readable.from([frame(41)]), zstdDecompressor(), new Sink())).rejects.toThrow(/window/);
    // Single segment: the window is the declared content size (8 bytes here: 2^40).
    const single = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 0, 1, 0, 0, 0x09, 0x00, 0x00, 0x78]);
    await expect(decode(single, 4096)).rejects.toThrow(/1048576 MiB window/);
  });

  it("decodes a zstd bomb only as fast as it is read (16 KiB of RLE blocks for 512 MiB)", async () => {
    const blocks = Array.from({ length: 4096 }, (_, i) => {
      const v = (131072 << 3) | (1 << 1) | (i === 4095 ? 1 : 0);
      return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, 0x41]);
    });
    const bomb = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, (17 - 10) << 3]), ...blocks]);
    const base = process.memoryUsage().arrayBuffers;
    let seen = 0;
    let peak = 0;
    const slow = new Writable({
      write(c: Buffer, _e, cb) {
        seen += c.length;
        peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
        if (seen >= 64 << 20) return cb(new Error("read enough"));
        setImmediate(cb);
      },
    });
    await expect(pipeline(Readable.from([bomb]), zstdDecompressor(), slow)).rejects.toThrow(/read enough/);
    expect(seen).toBeGreaterThanOrEqual(64 << 20);
    expect(peak).toBeLessThan(160 << 20);
  }, 60_000);

  it("zstdDecompressor reads several frames whichever decoder this Node has", async () => {
    const tar = await collect(tarChunks(entries(3, 1_000_000)));
    const z = await collect(zstdFrames(3, 700_000)(Readable.from([tar])));
    const sink = new Sink();
    await pipeline(Readable.from([z]), zstdDecompressor(), sink);
    expect(sink.bytes.equals(tar)).toBe(true);
  });
});
