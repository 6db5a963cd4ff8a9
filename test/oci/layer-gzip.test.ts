/**
 * The layer writer's gzip in fixed-size members compressed in parallel: the bytes
 * are what the definition says (each GZIP_MEMBER_BYTES piece of the tar gzipped on
 * its own, concatenated), whatever the thread count; gunzip and GNU tar read them
 * back to the exact tar; a layer below one member is what a plain createGzip gives.
 */
import { execFile, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGunzip, createGzip, gunzipSync, gzipSync } from "node:zlib";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { GZIP_MEMBER_BYTES, gzipMembers, isDense, looksIncompressible } from "../../src/oci/layer-gzip.js";
import { type LayerEntry, tarChunks, writeLayer, writeLayerToDir } from "../../src/oci/layer.js";

const pexec = promisify(execFile);
const MiB = 1024 * 1024;
const T = new Date("2021-03-04T05:06:07Z");
const haveGzip = existsSync("/usr/bin/gzip") || existsSync("/bin/gzip");
const haveTar = existsSync("/usr/bin/tar");
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

/**
 * Deterministic content that compresses like real files (about 40% at level 6): a
 * pseudo-random walk over a small vocabulary of words and random bytes, so zlib
 * has both matches and literals to work on.
 */
function corpus(size: number, seed: number): Buffer {
  const key = `${size}/${seed}`;
  const hit = corpusCache.get(key);
  if (hit !== undefined) return hit;
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  const rnd = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const words = Array.from({ length: 512 }, (_, i) => Buffer.from(`${i.toString(36)}_${"abcdefghij".slice(0, 2 + (i % 8))} `));
  let off = 0;
  while (off < size) {
    const r = rnd();
    if (r % 4 === 0) out[off++] = r >>> 24;
    else off += words[r % words.length]!.copy(out, off);
  }
  corpusCache.set(key, out);
  return out;
}
const corpusCache = new Map<string, Buffer>();

/** A file entry whose content comes in uneven pieces, so member cuts fall inside reads. */
function fileEntry(path: string, body: Buffer): LayerEntry {
  return {
    path,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: T,
    size: body.length,
    open: () => {
      const pieces: Buffer[] = [];
      for (let off = 0, i = 0; off < body.length; i++) {
        const n = 65_536 - 4_099 * (i % 7);
        pieces.push(body.subarray(off, off + n));
        off += n;
      }
      return Readable.from(pieces);
    },
  };
}

/** About 3.5 members of tar: files of uneven sizes, so no cut falls on an entry boundary. */
function bigLayer(): LayerEntry[] {
  const base = { uid: 0, gid: 0, mtime: T };
  return [
    { ...base, path: "data", type: "directory", mode: 0o755 },
    fileEntry("data/a.bin", corpus(5 * MiB + 12_345, 1)),
    fileEntry("data/b.txt", corpus(3_001, 2)),
    fileEntry("data/c.bin", corpus(9 * MiB - 777, 3)),
  ];
}

/** The definition of the output: each GZIP_MEMBER_BYTES piece of the tar gzipped on its own, in order. */
function expectedMembers(tar: Buffer, level: number, memberBytes = GZIP_MEMBER_BYTES): Buffer {
  const members: Buffer[] = [];
  for (let off = 0; off < tar.length || members.length === 0; off += memberBytes) {
    members.push(gzipSync(tar.subarray(off, off + memberBytes), { level }));
  }
  return Buffer.concat(members);
}

async function plainGzip(entries: LayerEntry[], level: number): Promise<Buffer> {
  const sink = new Sink();
  await pipeline(Readable.from(tarChunks(entries)), createGzip({ level }), sink);
  return sink.bytes;
}

describe("layer gzip: a layer of several members", () => {
  let tmp: string;
  let tar: Buffer;
  let gz: Buffer;
  let written: Awaited<ReturnType<typeof writeLayer>>;

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "ocibuild-layer-gzip-"));
    tar = await collect(tarChunks(bigLayer()));
    const sink = new Sink();
    written = await writeLayer(bigLayer(), sink);
    gz = sink.bytes;
    await writeFile(join(tmp, "layer.tar.gz"), gz);
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("spans several members", () => {
    expect(tar.length).toBeGreaterThan(3 * GZIP_MEMBER_BYTES);
    expect(tar.length % GZIP_MEMBER_BYTES).not.toBe(0);
  });

  it("is exactly the concatenation of each member-sized piece of the tar gzipped on its own", () => {
    // (Every piece of this corpus compresses, so each is deflated at the level asked.)
    for (let off = 0; off < tar.length; off += GZIP_MEMBER_BYTES) expect(looksIncompressible(tar.subarray(off, off + GZIP_MEMBER_BYTES))).toBe(false);
    expect(gz.equals(expectedMembers(tar, 6))).toBe(true);
  });

  it("gunzips (node) to the exact tar, with DiffID, digest and sizes right", () => {
    const back = gunzipSync(gz);
    expect(back.equals(tar)).toBe(true);
    expect(written.diffId).toBe(sha256(back));
    expect(written.digest).toBe(sha256(gz));
    expect(written.size).toBe(gz.length);
    expect(written.uncompressedSize).toBe(tar.length);
  });

  it("a streaming createGunzip (how rootfs and docker-archive read layers back) gives the exact tar, fed in uneven pieces", async () => {
    for (const opts of [{}, { chunkSize: 256 * 1024 }]) {
      const pieces: Buffer[] = [];
      for (let off = 0, i = 0; off < gz.length; i++) {
        const n = 1 + ((i * 104_729) % 200_000);
        pieces.push(gz.subarray(off, off + n));
        off += n;
      }
      const out = new Sink();
      await pipeline(Readable.from(pieces), createGunzip(opts), out);
      expect(out.bytes.equals(tar)).toBe(true);
    }
  });

  it.skipIf(!haveGzip)("gzip -dc gives the exact tar (needs gzip)", () => {
    const back = execFileSync("gzip", ["-dc", join(tmp, "layer.tar.gz")], { maxBuffer: 64 * MiB });
    expect(back.equals(tar)).toBe(true);
    expect(execFileSync("gzip", ["-t", join(tmp, "layer.tar.gz")]).length).toBe(0);
  });

  it.skipIf(!haveTar)("tar -tzvf lists every entry with its size (needs tar)", () => {
    const listing = execFileSync("tar", ["-tzvf", join(tmp, "layer.tar.gz")], { encoding: "utf8", env: { TZ: "UTC", LC_ALL: "C" } })
      .trim()
      .split("\n");
    const entries = bigLayer();
    expect(listing).toHaveLength(entries.length);
    for (const [i, e] of entries.entries()) {
      expect(listing[i]!.endsWith(e.type === "directory" ? ` ${e.path}/` : ` ${e.path}`), listing[i]).toBe(true);
      if (e.type === "file") expect(listing[i]).toMatch(new RegExp(`\\s${e.size}\\s2021-03-04`));
    }
  });

  it("is the same on a second write, and at level 1 gives the same DiffID and other bytes", async () => {
    const again = new Sink();
    expect(await writeLayer(bigLayer(), again)).toEqual(written);
    expect(again.bytes.equals(gz)).toBe(true);
    const l1 = new Sink();
    const w1 = await writeLayer(bigLayer(), l1, { compressionLevel: 1 });
    expect(w1.diffId).toBe(written.diffId);
    expect(w1.digest).not.toBe(written.digest);
    expect(l1.bytes.equals(expectedMembers(tar, 1))).toBe(true);
  });

  it("level 0 (stored) round-trips and is deterministic", async () => {
    const a = new Sink();
    const b = new Sink();
    const wa = await writeLayer(bigLayer(), a, { compressionLevel: 0 });
    const wb = await writeLayer(bigLayer(), b, { compressionLevel: 0 });
    expect(wb).toEqual(wa);
    expect(wa.diffId).toBe(written.diffId);
    expect(gunzipSync(a.bytes).equals(tar)).toBe(true);
    expect(wa.size).toBeGreaterThan(tar.length);
  });

  it("gives the same bytes in child processes with UV_THREADPOOL_SIZE 1 and 4", async () => {
    // The child runs the real writer (bundled from src/ by esbuild) on the same files from disk.
    const files: [string, string][] = [];
    for (const e of bigLayer().filter((x) => x.type === "file")) {
      const src = join(tmp, e.path.replace("/", "_"));
      await writeFile(src, await collect((await e.open!()) as AsyncIterable<Buffer>));
      files.push([e.path, src]);
    }
    await build({
      entryPoints: [new URL("../../src/oci/layer.ts", import.meta.url).pathname],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile: join(tmp, "layer.mjs"),
      // The zstd encoder (a native module, loaded only for zstd layers) is left out, as the CLI bundle leaves it.
      external: ["./zstd-native.js"],
      logLevel: "error",
    });
    const child = join(tmp, "child.mjs");
    await writeFile(
      child,
      `import { createReadStream, statSync } from "node:fs";
import { Writable } from "node:stream";
import { writeLayer } from "./layer.mjs";
const files = JSON.parse(process.argv[2]);
const entries = [{ path: "data", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: new Date(${T.getTime()}) }].concat(
  files.map(([path, src]) => ({ path, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: new Date(${T.getTime()}), size: statSync(src).size, sourcePath: src, open: () => createReadStream(src) })),
);
let bytes = 0;
const w = await writeLayer(entries, new Writable({ write(c, _e, cb) { bytes += c.length; cb(); } }));
console.log(JSON.stringify({ ...w, bytes }));
`,
    );
    const runChild = async (threads: string) => {
      const { stdout } = await pexec(process.execPath, [child, JSON.stringify(files)], { env: { ...process.env, UV_THREADPOOL_SIZE: threads } });
      return JSON.parse(stdout) as typeof written & { bytes: number };
    };
    const one = await runChild("1");
    const four = await runChild("4");
    expect(one).toEqual({ ...written, bytes: gz.length });
    expect(four).toEqual(one);
  });
});

describe("layer gzip: below one member, the bytes of a plain createGzip", () => {
  const base = { uid: 0, gid: 0, mtime: T };
  const small = (): LayerEntry[] => [
    { ...base, path: "etc", type: "directory", mode: 0o755 },
    fileEntry("etc/config", corpus(1_000, 4)),
    fileEntry("etc/blob", corpus(MiB + 5, 5)),
    { ...base, path: "etc/empty", type: "file", mode: 0o644, size: 0 },
  ];

  it.each([1, 6, 9])("level %i", async (level) => {
    const sink = new Sink();
    const w = await writeLayer(small(), sink, { compressionLevel: level });
    expect(w.uncompressedSize).toBeLessThan(GZIP_MEMBER_BYTES);
    expect(sink.bytes.equals(await plainGzip(small(), level))).toBe(true);
  });

  it("level 0: the bytes of createGzip given the tar in one write", async () => {
    // Stored blocks end where zlib's input or output buffer ends, so a streaming
    // createGzip({ level: 0 }) depends on the read sizes; one whole write does not.
    const sink = new Sink();
    await writeLayer(small(), sink, { compressionLevel: 0 });
    const tar = await collect(tarChunks(small()));
    const one = new Sink();
    await pipeline(Readable.from([tar]), createGzip({ level: 0 }), one);
    expect(sink.bytes.equals(one.bytes)).toBe(true);
    expect(gunzipSync(sink.bytes).equals(tar)).toBe(true);
  });

  it("an empty-looking layer (only the end-of-archive blocks) as well", async () => {
    const sink = new Sink();
    await writeLayer([], sink);
    expect(sink.bytes.equals(await plainGzip([], 6))).toBe(true);
  });
});

describe("layer gzip: the member stage on its own", () => {
  const run = async (input: Buffer[], level: number, memberBytes: number, inFlight: number) => {
    const sink = new Sink();
    await pipeline(Readable.from(input), gzipMembers(level, memberBytes, inFlight), sink);
    return sink.bytes;
  };

  it("cuts at fixed offsets whatever the read sizes and the window, with no empty member at an exact multiple", async () => {
    const data = corpus(10 * 65_536, 6);
    for (const [len, inFlight] of [
      [data.length, 1],
      [data.length, 3],
      [data.length - 1, 8],
      [4 * 65_536, 2],
      [1, 3],
      [0, 3],
    ] as const) {
      const input = data.subarray(0, len);
      const want = expectedMembers(input, 6, 65_536);
      // One big write, then many small uneven ones.
      expect((await run([input], 6, 65_536, inFlight)).equals(want), `${len} in one write, window ${inFlight}`).toBe(true);
      const pieces: Buffer[] = [];
      for (let off = 0, i = 0; off < len; i++) {
        pieces.push(input.subarray(off, off + 1 + ((i * 7_919) % 40_000)));
        off += 1 + ((i * 7_919) % 40_000);
      }
      expect((await run(pieces, 6, 65_536, inFlight)).equals(want), `${len} in pieces, window ${inFlight}`).toBe(true);
    }
  });

  it("a failing source fails the stage", async () => {
    const bad = async function* () {
      yield corpus(200_000, 7);
      throw new Error("disk on fire");
    };
    await expect(pipeline(Readable.from(bad()), gzipMembers(6, 65_536, 3), new Sink())).rejects.toThrow("disk on fire");
  });
});

describe("layer gzip: errors and abort with members in flight", () => {
  const base = { uid: 0, gid: 0, mtime: T, mode: 0o644 };
  async function code(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (e) {
      return isOcibuildError(e) ? e.code : `not an OcibuildError: ${String(e)}`;
    }
    return "resolved";
  }

  it("an abort after several members leaves no file, promptly", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-gzip-abort-"));
    try {
      const ac = new AbortController();
      const chunk = corpus(65_536, 8);
      let sent = 0;
      const big: LayerEntry = {
        ...base,
        path: "big",
        type: "file",
        size: 1 << 30,
        open: () =>
          new Readable({
            read() {
              sent += chunk.length;
              if (sent > 3 * GZIP_MEMBER_BYTES + 123) ac.abort(new Error("user pressed Ctrl-C"));
              this.push(chunk);
            },
          }),
      };
      const t0 = performance.now();
      expect(await code(writeLayerToDir([big], dir, { signal: ac.signal }))).toBe("ABORTED");
      expect(performance.now() - t0).toBeLessThan(20_000);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a content error after several members fails with its code and leaves no file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-gzip-fail-"));
    try {
      const body = corpus(9 * MiB, 9);
      // Declared one byte longer than the content: found out only at the end of the file.
      const short: LayerEntry = { ...fileEntry("short", body), size: body.length + 1 };
      expect(await code(writeLayerToDir([short], dir))).toBe("LAYER_SIZE_MISMATCH");
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("reads real files through sourcePath and open (the walk's path) across members", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-gzip-files-"));
    try {
      const body = corpus(6 * MiB + 1, 10);
      await writeFile(join(dir, "f"), body);
      const entry: LayerEntry = { ...base, path: "f", type: "file", size: body.length, sourcePath: join(dir, "f"), open: () => createReadStream(join(dir, "f")) };
      const sink = new Sink();
      const w = await writeLayer([entry], sink);
      const tar = await collect(tarChunks([entry]));
      expect(sink.bytes.equals(expectedMembers(tar, 6))).toBe(true);
      expect(w.diffId).toBe(sha256(tar));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("layer gzip: pieces that do not compress are stored", () => {
  const members = async (input: Buffer, level: number) => collect(gzipMembers(level)(Readable.from([input])));
  /**
   * Stored output depends on zlib's buffer sizes (see the level 0 test above): a piece
   * found incompressible is createGzip({ level: 0 }) given it in one write, with 1 MiB
   * output buffers; --compression-level 0 keeps zlib's default buffers.
   */
  const stored = async (piece: Buffer, chunkSize = 1024 * 1024) => {
    const one = new Sink();
    await pipeline(Readable.from([piece]), createGzip({ level: 0, chunkSize }), one);
    return one.bytes;
  };
  const splitAt = (b: Buffer, n: number) => [b.subarray(0, n), b.subarray(n)];

  it("random bytes: stored (the bytes of gzip level 0), read back exactly, at no size cost", async () => {
    const random = randomBytes(GZIP_MEMBER_BYTES + 100_000);
    expect(looksIncompressible(random.subarray(0, GZIP_MEMBER_BYTES))).toBe(true);
    const out = await members(random, 6);
    const [a, b] = splitAt(random, GZIP_MEMBER_BYTES);
    expect(out.equals(Buffer.concat([await stored(a!), await stored(b!)]))).toBe(true);
    expect(gunzipSync(out).equals(random)).toBe(true);
    // Deflate at level 6 would not have made it smaller either.
    expect(out.length).toBeLessThanOrEqual(gzipSync(random, { level: 6 }).length + 64);
  });

  it("a piece of random bytes with one compressible stretch is deflated as asked", async () => {
    const piece = randomBytes(GZIP_MEMBER_BYTES);
    const text = corpus(1_000_000, 21);
    text.copy(piece, 1_500_000);
    expect(looksIncompressible(piece)).toBe(false);
    expect((await members(piece, 6)).equals(gzipSync(piece, { level: 6 }))).toBe(true);
  });

  it("each piece is judged on its own: a compressible piece after a random one is deflated", async () => {
    const input = Buffer.concat([randomBytes(GZIP_MEMBER_BYTES), corpus(GZIP_MEMBER_BYTES, 22)]);
    const [a, b] = splitAt(input, GZIP_MEMBER_BYTES);
    const out = await members(input, 6);
    expect(out.equals(Buffer.concat([await stored(a!), gzipSync(b!, { level: 6 })]))).toBe(true);
  });

  it("a layer of one big random file is stored, though its tar header and end blocks compress", async () => {
    const body = randomBytes(2 * GZIP_MEMBER_BYTES + 5_000);
    const entries = (): LayerEntry[] => [{ path: "b.bin", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: T, size: body.length, open: () => Readable.from([body]) }];
    const sink = new Sink();
    const w = await writeLayer(entries(), sink);
    const tar = await collect(tarChunks(entries()));
    const pieces: Buffer[] = [];
    // Two whole pieces stored; the short last one (the file's end, padding, end blocks) deflated.
    for (let off = 0; off < tar.length; off += GZIP_MEMBER_BYTES) {
      const piece = tar.subarray(off, off + GZIP_MEMBER_BYTES);
      pieces.push(piece.length === GZIP_MEMBER_BYTES ? await stored(piece) : gzipSync(piece, { level: 6 }));
    }
    expect(pieces).toHaveLength(3);
    expect(sink.bytes.equals(Buffer.concat(pieces))).toBe(true);
    expect(w.diffId).toBe(sha256(tar));
    expect(gunzipSync(sink.bytes).equals(tar)).toBe(true);
  });

  it("a piece compressed while it fills (its bytes arriving in uneven writes) has the bytes of the whole piece compressed at once", async () => {
    const inPieces = (b: Buffer) => {
      const out: Buffer[] = [];
      for (let off = 0, i = 0; off < b.length; i++) {
        const n = 30_000 + ((i * 7_919) % 90_000);
        out.push(b.subarray(off, off + n));
        off += n;
      }
      return out;
    };
    const fed = async (input: Buffer) => collect(gzipMembers(6)(Readable.from(inPieces(input))));
    // Text only, below one member and across two: deflated as it arrives.
    const text = corpus(3 * MiB, 31);
    expect((await fed(text)).equals(gzipSync(text, { level: 6 }))).toBe(true);
    const long = corpus(GZIP_MEMBER_BYTES + MiB, 32);
    const [l1, l2] = splitAt(long, GZIP_MEMBER_BYTES);
    expect((await fed(long)).equals(Buffer.concat([gzipSync(l1!, { level: 6 }), gzipSync(l2!, { level: 6 })]))).toBe(true);
    // A text start, then random bytes: deflating began, but the whole piece is stored.
    const mostlyRandom = Buffer.concat([corpus(300_000, 33), randomBytes(GZIP_MEMBER_BYTES - 300_000)]);
    expect(looksIncompressible(mostlyRandom)).toBe(true);
    expect((await fed(mostlyRandom)).equals(await stored(mostlyRandom))).toBe(true);
    // A random start, then text: the piece is deflated as a whole.
    const mostlyText = Buffer.concat([randomBytes(200_000), corpus(3 * MiB, 34)]);
    expect((await fed(mostlyText)).equals(gzipSync(mostlyText, { level: 6 }))).toBe(true);
  });

  it("a sample's density check stops counting early only where the whole histogram gives the same answer", () => {
    /** The whole histogram's entropy, in bits per byte: the definition isDense must agree with. */
    const fullEntropy = (b: Uint8Array) => {
      const c = new Array<number>(256).fill(0);
      for (const x of b) c[x]!++;
      return c.reduce((h, n) => (n === 0 ? h : h - (n / b.length) * Math.log2(n / b.length)), 0);
    };
    const counts = new Uint32Array(256);
    const samples: Buffer[] = [Buffer.alloc(2048), corpus(2048, 40), randomBytes(2048), randomBytes(100)];
    // The densest a sample with one value at a given share can be: that value, and the
    // rest spread evenly over the other 255. Past a share of ~7% it is below 7.8 bits;
    // the counting stops at 7.5% (154 of 2048). Shares of 4.9-9.8% go both sides of both.
    for (let planted = 100; planted <= 200; planted += 2) {
      const b = Buffer.alloc(2048);
      for (let i = planted; i < b.length; i++) b[i] = 1 + ((i - planted) % 255);
      samples.push(b);
    }
    // Random bytes with one value planted, and with two, around the same shares.
    for (let planted = 120; planted <= 200; planted += 8) {
      const one = randomBytes(2048);
      const two = randomBytes(2048);
      for (let i = 0; i < planted; i++) {
        one[Math.floor((i * 2048) / planted)] = 0x41;
        two[Math.floor((i * 2048) / planted)] = i % 2 ? 0x41 : 0x42;
      }
      samples.push(one, two);
    }
    // Entropies around the threshold (7.8 bits): random bytes drawn from 200-256 values.
    for (let values = 200; values <= 256; values += 4) samples.push(Buffer.from(randomBytes(2048).map((x) => x % values)));
    let dense = 0;
    for (const b of samples) {
      const want = fullEntropy(b) > 7.8;
      expect(isDense(b, counts)).toBe(want);
      if (want) dense++;
    }
    // Both answers were exercised.
    expect(dense).toBeGreaterThan(3);
    expect(dense).toBeLessThan(samples.length - 3);
  });

  it("small pieces (under 64 KiB) are always deflated as asked; level 0 stays level 0", async () => {
    const small = randomBytes(60_000);
    expect(looksIncompressible(small)).toBe(false);
    expect((await members(small, 6)).equals(gzipSync(small, { level: 6 }))).toBe(true);
    const random = randomBytes(200_000);
    expect((await members(random, 0)).equals(await stored(random, 16 * 1024))).toBe(true);
  });
});
