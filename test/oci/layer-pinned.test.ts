/**
 * The layer digest of a fixed tree on disk is pinned: the writer's speed work (how
 * small files are read, how headers and content are gathered into chunks) must never
 * change a byte. The tree is read as the snapshot reads a step's change: files by
 * sourcePath (small ones read in one call, large ones streamed), with owners, modes and
 * mtimes set in the entries so the digest does not depend on who runs the test.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type LayerEntry, writeLayer } from "../../src/oci/layer.js";
import { walkDirectory } from "../../src/oci/tar-entries.js";

const T = new Date("2021-03-04T05:06:07Z");

/** Deterministic bytes: text-like (compressible) with a seeded xorshift stream. */
function body(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed * 2654435761 + 1;
  const words = ["module", "exports", "require", "function", "return", "const", "{", "}", "(", ")", ";", "\n", "  "];
  let i = 0;
  while (i < size) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const w = words[(x >>> 0) % words.length]!;
    i += out.write(`${w} `, i, "latin1");
    if ((x & 0xff) === 7 && i < size) out[i++] = (x >>> 8) & 0xff;
  }
  return out;
}

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "ocibuild-pinned-"));
  // 60 directories of 40 files of 0-3,000 bytes (an npm-style tree, ~3.5 MiB of tar),
  // then files around the one-call read limit (256 KiB) and one over a gzip member (4 MiB).
  for (let d = 0; d < 60; d++) {
    const dir = join(root, "deps", `pkg${d}`);
    await mkdir(dir, { recursive: true });
    for (let f = 0; f < 40; f++) await writeFile(join(dir, `f${f}.js`), body((d * 7919 + f * 104729) % 3001, d * 100 + f));
  }
  await mkdir(join(root, "big"));
  await writeFile(join(root, "big/just-under"), body(256 * 1024, 1));
  await writeFile(join(root, "big/just-over"), body(256 * 1024 + 1, 2));
  await writeFile(join(root, "big/member"), body(4 * 1024 * 1024 + 4097, 3));
  await writeFile(join(root, "big/odd"), body(511, 4));
  await symlink("../deps/pkg1/f1.js", join(root, "big/link"));
}, 60_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function entries(): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for await (const e of walkDirectory(root)) {
    out.push({ ...e, uid: 0, gid: 0, mtime: T, mode: e.type === "directory" ? 0o755 : e.type === "symlink" ? 0o777 : 0o644 });
  }
  return out;
}

const nullSink = () => new Writable({ write: (_c, _e, cb) => cb() });

describe("layer writer: the digest of a fixed tree on disk", () => {
  it("is pinned at gzip level 6 (several members) and uncompressed", async () => {
    const gz = await writeLayer(await entries(), nullSink());
    expect({ digest: gz.digest, diffId: gz.diffId, size: gz.size, tar: gz.uncompressedSize }).toEqual({
      digest: "sha256:ff0ad252eeb4e75a2ffc2f9611f83826c3959d6f4ca6a93bb63ac69a980bbdb6",
      diffId: "sha256:a0cbb19f81cf91266063c289235c15819d95ce7e78011ce2388c45cb9a497061",
      size: 1504404,
      tar: 10213888,
    });
    const plain = await writeLayer(await entries(), nullSink(), { compression: "uncompressed" });
    expect(plain.diffId).toBe(gz.diffId);
  });
});

describe("layer writer: a small file read by sourcePath is checked against its declared size", () => {
  const file = (size: number): LayerEntry => ({ path: "f", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: T, size, sourcePath: join(root, "big/odd"), open: () => { throw new Error("streamed"); } });
  const codeOf = (e: LayerEntry) => writeLayer([e], nullSink()).then(() => "ok", (err: { code?: string }) => err.code);

  it("fails when the file grew or shrank since it was listed, or is gone", async () => {
    expect(await codeOf(file(511))).toBe("ok");
    expect(await codeOf(file(510))).toBe("LAYER_SIZE_MISMATCH");
    expect(await codeOf(file(512))).toBe("LAYER_SIZE_MISMATCH");
    expect(await codeOf({ ...file(10), sourcePath: join(root, "missing") })).toBe("LAYER_CONTENT_READ_FAILED");
  });
});
