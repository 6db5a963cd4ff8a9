import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, readFile, readdir, readlink, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import type { DiffID } from "../../../src/oci/digest.js";
import { extractLayer } from "../../../src/builder/fs/extract.js";
import { chainId, LayerStore, type ChainMemo } from "../../../src/builder/fs/layer-store.js";
import { findOpaqueDirs } from "../../../src/builder/fs/native.js";
import { isRoot, makeLayer, makeTar, streamOf, type TarSpec, makeCanaryRoot } from "../../../testdata/builder/fixtures.js";

let base: string;
let root: string;
let outside: string;

beforeEach(async () => {
  ({ base, root, outside } = await makeCanaryRoot("ocibuild-rootfs-"));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function extract(specs: TarSpec[], opts: { gzip?: boolean; whiteouts?: "apply" | "overlay"; warnings?: string[] } = {}): Promise<void> {
  const buf = await makeTar(specs, opts.gzip ?? false);
  await extractLayer(root, streamOf(buf), { whiteouts: opts.whiteouts, onWarning: (m) => opts.warnings?.push(m) });
}

async function expectCanaryUntouched(): Promise<void> {
  expect(await readFile(join(outside, "canary"), "utf8")).toBe("safe");
  expect((await readdir(outside)).sort()).toEqual(["canary"]);
  expect((await readdir(base)).filter((n) => n !== "store").sort()).toEqual(["outside", "root"]);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(OcibuildError);
    return (e as OcibuildError).code;
  }
  return "NO ERROR";
}

describe("extractLayer: ordinary layers", () => {
  it.each([false, true])("extracts files, dirs, symlinks and hardlinks with modes, owners and mtimes (gzip=%s)", async (gzip) => {
    const mtime = new Date("2023-05-06T07:08:09Z");
    await extract(
      [
        { name: "./", type: "directory", mode: 0o755 },
        { name: "usr/", type: "directory", mode: 0o750, uid: 12, gid: 34, mtime },
        { name: "usr/bin/tool", content: "#!/bin/sh\necho tool\n", mode: 0o4755, uid: 5, gid: 6, mtime },
        { name: "usr/bin/alias", type: "link", linkname: "usr/bin/tool" },
        { name: "lib", type: "symlink", linkname: "usr/lib", uid: 7, gid: 8 },
        { name: "abs", type: "symlink", linkname: "/etc/passwd" },
        { name: "etc/conf", content: "x=1\n", mode: 0o600 },
      ],
      { gzip },
    );
    const tool = await lstat(join(root, "usr/bin/tool"));
    expect(await readFile(join(root, "usr/bin/tool"), "utf8")).toBe("#!/bin/sh\necho tool\n");
    expect(tool.mode & 0o7777).toBe(0o4755);
    expect(tool.mtime.getTime()).toBe(mtime.getTime());
    if (isRoot) expect([tool.uid, tool.gid]).toEqual([5, 6]);
    const alias = await lstat(join(root, "usr/bin/alias"));
    expect(alias.ino).toBe(tool.ino);
    expect(await readlink(join(root, "lib"))).toBe("usr/lib");
    expect(await readlink(join(root, "abs"))).toBe("/etc/passwd");
    const usr = await lstat(join(root, "usr"));
    expect(usr.mode & 0o7777).toBe(0o750);
    expect(usr.mtime.getTime()).toBe(mtime.getTime());
    if (isRoot) expect([usr.uid, usr.gid]).toEqual([12, 34]);
    expect((await lstat(join(root, "etc/conf"))).mode & 0o777).toBe(0o600);
    // Implicit parent created for etc/conf.
    expect((await lstat(join(root, "etc"))).isDirectory()).toBe(true);
  });

  it("refuses to create children under a lower file without the layer's directory entry", async () => {
    await extract([{ name: "a", content: "file" }]);
    expect(await codeOf(extract([{ name: "a/inner", content: "x" }]))).toBe("ROOTFS_NOT_A_DIRECTORY");
  });

  it("replaces a lower file by a directory and a directory by a file", async () => {
    await extract([{ name: "a", content: "file" }, { name: "b/c", content: "in dir" }]);
    await extract([{ name: "a/", type: "directory" }, { name: "a/inner", content: "now a dir" }, { name: "b", content: "now a file" }]);
    expect(await readFile(join(root, "a/inner"), "utf8")).toBe("now a dir");
    expect(await readFile(join(root, "b"), "utf8")).toBe("now a file");
  });

  it("applies whiteouts and opaque directories to lower content only", async () => {
    await extract([
      { name: "gone", content: "x" },
      { name: "keep", content: "k" },
      { name: "dir/old1", content: "1" },
      { name: "dir/old2", content: "2" },
      { name: "dir/sub/deep", content: "3" },
      { name: "tree/a", content: "a" },
    ]);
    const warnings: string[] = [];
    await extract(
      [
        { name: ".wh.gone" },
        { name: "dir/new", content: "n" },
        { name: "dir/.wh..wh..opq" },
        { name: ".wh.tree" },
        { name: "fresh", content: "f" },
        { name: ".wh.fresh" },
      ],
      { warnings },
    );
    expect((await readdir(root)).sort()).toEqual(["dir", "fresh", "keep"]);
    expect(await readdir(join(root, "dir"))).toEqual(["new"]);
    expect(warnings.join("\n")).toMatch(/fresh/);
  });

  it("extracts zstd layers, zstd(1)'s single frame and the writer's frames alike", async () => {
    const raw = await makeTar([{ name: "dir/f", content: "zstd ".repeat(5000) }, { name: "g", content: "g" }]);
    const { execFileSync } = await import("node:child_process");
    const { zstdFrames } = await import("../../../src/oci/layer-zstd.js");
    const single = execFileSync("sh", ["-c", "cat | zstd -q -c"], { input: raw });
    const frames: Buffer[] = [];
    for await (const c of zstdFrames(3, 1000)(Readable.from([raw]))) frames.push(c);
    for (const blob of [single, Buffer.concat(frames)]) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root);
      const diffId = `sha256:${createHash("sha256").update(raw).digest("hex")}` as DiffID;
      await extractLayer(root, streamOf(blob), { mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", diffId });
      expect(await readFile(join(root, "dir/f"), "utf8")).toBe("zstd ".repeat(5000));
      expect(await readFile(join(root, "g"), "utf8")).toBe("g");
    }
  });

  it("fails damaged zstd with a coded error; compressions OCI layers may not use are refused as such", async () => {
    const zstdMagic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
    expect(await codeOf(extractLayer(root, Readable.from([zstdMagic])))).toBe("ROOTFS_EXTRACT_FAILED");
    const { execFileSync } = await import("node:child_process");
    const bz = execFileSync("bzip2", ["-c"], { input: await makeTar([{ name: "f", content: "x" }]) });
    expect(await codeOf(extractLayer(root, streamOf(bz)))).toBe("ROOTFS_LAYER_COMPRESSION_UNSUPPORTED");
  });

  it("notices a damaged gzip trailer after the tar's end marker", async () => {
    // Zero padding after the end marker (tar writers pad to a record size) keeps the trailer far from it.
    const raw = Buffer.concat([await makeTar([{ name: "f", content: "x" }]), Buffer.alloc(4 << 20)]);
    const { gzipSync } = await import("node:zlib");
    const buf = gzipSync(raw);
    buf[buf.length - 5] = buf[buf.length - 5]! ^ 0xff; // CRC/size trailer
    expect(await codeOf(extractLayer(root, streamOf(buf)))).toBe("ROOTFS_EXTRACT_FAILED");
  });

  it("fails a truncated gzip layer with a coded error", async () => {
    const buf = await makeTar([{ name: "f", content: "x".repeat(10000) }], true);
    const code = await codeOf(extractLayer(root, streamOf(buf.subarray(0, buf.length - 20))));
    expect(code).toBe("ROOTFS_EXTRACT_FAILED");
  });

  describe.skipIf(!isRoot)("device nodes and fifos (needs root)", () => {
    it("creates char devices and fifos", async () => {
      await extract([
        { name: "dev/null", type: "character-device", devmajor: 1, devminor: 3, mode: 0o666 },
        { name: "run/pipe", type: "fifo", mode: 0o600 },
      ]);
      const n = await lstat(join(root, "dev/null"));
      expect(n.isCharacterDevice()).toBe(true);
      expect(n.rdev).toBe((1 << 8) | 3);
      expect((await lstat(join(root, "run/pipe"))).isFIFO()).toBe(true);
    });
  });

  describe.skipIf(!isRoot)("overlay form (needs root for trusted.* xattrs)", () => {
    it("keeps whiteouts as char 0/0 devices and opaque dirs as the overlay xattr", async () => {
      await extract(
        [
          { name: "etc/.wh.removed" },
          { name: "var/cache/.wh..wh..opq" },
          { name: "var/cache/kept", content: "k" },
          { name: "x", content: "1", pax: { "SCHILY.xattr.user.note": "hello" } },
        ],
        { whiteouts: "overlay" },
      );
      const wh = await lstat(join(root, "etc/removed"));
      expect(wh.isCharacterDevice()).toBe(true);
      expect(wh.rdev).toBe(0);
      expect(await findOpaqueDirs(root)).toEqual(new Set(["var/cache"]));
      expect(await readFile(join(root, "var/cache/kept"), "utf8")).toBe("k");
    });
  });
});

describe("extractLayer: hostile layers never write outside the root", () => {
  const cases: [string, TarSpec[], string][] = [
    ["path traversal with ..", [{ name: "../outside/canary", content: "pwned" }], "ROOTFS_UNSAFE_PATH"],
    ["traversal hidden in the middle", [{ name: "a/../../outside/new", content: "pwned" }], "ROOTFS_UNSAFE_PATH"],
    ["absolute path", [{ name: `${"/"}${"tmp"}/ocibuild-abs-${process.pid}`, content: "pwned" }], "ROOTFS_UNSAFE_PATH"],
    [
      "symlink escape then write through it",
      [
        { name: "evil", type: "symlink", linkname: "../outside" },
        { name: "evil/canary", content: "pwned" },
      ],
      "ROOTFS_UNSAFE_PATH",
    ],
    [
      "symlink escape two levels deep",
      [
        { name: "a/b", type: "symlink", linkname: "../../../outside" },
        { name: "a/b/new", content: "pwned" },
      ],
      "ROOTFS_UNSAFE_PATH",
    ],
    [
      "symlink chain escaping",
      [
        { name: "one", type: "symlink", linkname: "two/.." },
        { name: "two", type: "symlink", linkname: ".." },
        { name: "one/outside/new", content: "pwned" },
      ],
      "ROOTFS_UNSAFE_PATH",
    ],
    [
      "hardlink to outside",
      [{ name: "stolen", type: "link", linkname: "../outside/canary" }],
      "ROOTFS_UNSAFE_PATH",
    ],
    [
      "hardlink to an absolute host path",
      [{ name: "stolen", type: "link", linkname: "/etc/passwd" }],
      "ROOTFS_UNSAFE_PATH",
    ],
    [
      "hardlink through an escaping symlink",
      [
        { name: "evil", type: "symlink", linkname: "../outside" },
        { name: "stolen", type: "link", linkname: "evil/canary" },
      ],
      "ROOTFS_UNSAFE_PATH",
    ],
    ["whiteout pointing outside", [{ name: "../outside/.wh.canary" }], "ROOTFS_UNSAFE_PATH"],
    [
      "whiteout through an escaping symlink",
      [
        { name: "evil", type: "symlink", linkname: "../outside" },
        { name: "evil/.wh.canary" },
      ],
      "ROOTFS_UNSAFE_PATH",
    ],
    ["whiteout of ..", [{ name: "sub/.wh.." }], "ROOTFS_UNSAFE_PATH"],
    [
      "symlink loop",
      [
        { name: "a", type: "symlink", linkname: "b" },
        { name: "b", type: "symlink", linkname: "a" },
        { name: "a/x", content: "loop" },
      ],
      "ROOTFS_SYMLINK_LOOP",
    ],
    ["hardlink to a missing file", [{ name: "l", type: "link", linkname: "nothing" }], "ROOTFS_HARDLINK_TARGET_MISSING"],
  ];

  it.each(cases)("%s: coded error, canary untouched", async (_name, specs, code) => {
    expect(await codeOf(extract(specs))).toBe(code);
    await expectCanaryUntouched();
    expect(existsSync(`/tmp/ocibuild-abs-${process.pid}`)).toBe(false);
  });

  it.skipIf(!isRoot)("the same hostile layers fail in overlay form too", async () => {
    for (const [, specs, code] of cases) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root);
      expect(await codeOf(extract(specs, { whiteouts: "overlay" }))).toBe(code);
      await expectCanaryUntouched();
    }
  });

  it("a directory replaced by an escaping symlink later in the layer does not get its mode, owner or xattrs applied outside", async () => {
    const { stat } = await import("node:fs/promises");
    const before = await stat(outside);
    await extract([
      { name: "a/", type: "directory", mode: 0o700, uid: 4321, pax: { "SCHILY.xattr.user.pwned": "yes" } },
      { name: "a/b/", type: "directory", mode: 0o701 },
      { name: "a", type: "symlink", linkname: "../outside" },
    ]);
    const after = await stat(outside);
    expect([after.mode, after.uid, after.mtimeMs]).toEqual([before.mode, before.uid, before.mtimeMs]);
    const { getXattrs } = await import("../../../src/builder/fs/native.js");
    expect((await getXattrs([outside])).size).toBe(0);
    await expectCanaryUntouched();
  });

  it("follows an absolute symlink as the root sees it (inside the root, never the host)", async () => {
    await extract([
      { name: "hostdir", type: "symlink", linkname: outside },
      { name: "hostdir/canary", content: "inside" },
    ]);
    await expectCanaryUntouched();
    expect(await readFile(join(root, outside, "canary"), "utf8")).toBe("inside");
  });

  it("a lower layer's escaping symlink cannot be used by a later layer", async () => {
    await extract([{ name: "evil", type: "symlink", linkname: "../../outside" }]);
    expect(await codeOf(extract([{ name: "evil/canary", content: "pwned" }]))).toBe("ROOTFS_UNSAFE_PATH");
    await expectCanaryUntouched();
  });
});

describe("extractLayer: details", () => {
  it("keeps what the same layer added under an opaque directory, implicit parents included", async () => {
    await extract([{ name: "d/", type: "directory" }, { name: "d/old", content: "old" }, { name: "d/sub/", type: "directory" }, { name: "d/sub/old", content: "o" }]);
    await extract([{ name: "d/sub/new", content: "new" }, { name: "d/.wh..wh..opq" }]);
    expect(await readdir(join(root, "d"))).toEqual(["sub"]);
    // The lower d/sub/old is hidden too: the opaque directory hides all lower content below it.
    expect(await readdir(join(root, "d/sub"))).toEqual(["new"]);
  });

  it("never takes overlay attributes from a layer", async () => {
    const warnings: string[] = [];
    await extract([{ name: "d/", type: "directory", pax: { "SCHILY.xattr.trusted.overlay.opaque": "y" } }], { warnings });
    expect(warnings.join("\n")).toMatch(/ignored overlay attribute SCHILY.xattr.trusted.overlay.opaque/);
  });

  it("stops with ROOTFS_ABORTED when aborted, and a failing source is a coded error", async () => {
    const ac = new AbortController();
    const big = await makeTar(Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, content: "x".repeat(1000) })));
    let sent = 0;
    const src = new Readable({
      read() {
        if (sent >= big.length) return void this.push(null);
        const chunk = big.subarray(sent, sent + 4096);
        sent += chunk.length;
        if (sent > 20000) ac.abort();
        this.push(chunk);
      },
    });
    await expect(extractLayer(root, src, { signal: ac.signal })).rejects.toMatchObject({ code: "ROOTFS_ABORTED" });
    const failing = new Readable({
      read() {
        this.destroy(new Error("connection reset"));
      },
    });
    await expect(extractLayer(root, failing)).rejects.toMatchObject({ code: "ROOTFS_EXTRACT_FAILED" });
  });
});

describe("chainId", () => {
  const a = `sha256:${"a".repeat(64)}` as DiffID;
  const b = `sha256:${"b".repeat(64)}` as DiffID;
  const c = `sha256:${"c".repeat(64)}` as DiffID;
  it("is the DiffID for one layer and the OCI recursion above", () => {
    expect(chainId([a])).toBe(a);
    const ab = `sha256:${createHash("sha256").update(`${a} ${b}`).digest("hex")}`;
    expect(chainId([a, b])).toBe(ab);
    expect(chainId([a, b, c])).toBe(`sha256:${createHash("sha256").update(`${ab} ${c}`).digest("hex")}`);
    expect(chainId([b, a])).not.toBe(ab);
  });
  it("refuses an empty chain", () => {
    expect(() => chainId([])).toThrow(OcibuildError);
  });
  it("with a memo: the same IDs, and a longer chain hashes only what it adds", () => {
    const memo: ChainMemo = new Map();
    expect(chainId([a, b], memo)).toBe(chainId([a, b]));
    expect([...memo.keys()]).toEqual([a]);
    expect([...memo.get(a)!.keys()]).toEqual([b]);
    const ab = chainId([a, b]);
    expect(chainId([a, b, c], memo)).toBe(chainId([a, b, c]));
    expect([...memo.keys()]).toEqual([a, ab]);
    // The memo's entry is what a longer chain starts from (not hashed again).
    memo.get(a)!.set(b, "sha256:remembered");
    expect(chainId([a, b, c], memo)).toBe(`sha256:${createHash("sha256").update(`sha256:remembered ${c}`).digest("hex")}`);
    // Another layer on the same chain: a second entry under it.
    expect(chainId([a, c], memo)).toBe(chainId([a, c]));
    expect([...memo.get(a)!.keys()]).toEqual([b, c]);
  });
});

describe.skipIf(!isRoot)("LayerStore (needs root for whiteout devices)", () => {
  it("extracts a layer once, atomically, in overlay form", async () => {
    const store = new LayerStore(join(base, "store"));
    const { gz, diffId } = await makeLayer([{ name: "hello", content: "hi" }, { name: ".wh.old" }]);
    let opens = 0;
    const open = async () => {
      opens++;
      return streamOf(gz);
    };
    const [d1, d2] = await Promise.all([store.ensureLayer(diffId, open), store.ensureLayer(diffId, open)]);
    expect(d1).toBe(d2);
    const d3 = await store.ensureLayer(diffId, open);
    expect(d3).toBe(d1);
    expect(opens).toBeLessThanOrEqual(2);
    expect(await readFile(join(d1, "hello"), "utf8")).toBe("hi");
    expect((await lstat(join(d1, "old"))).isCharacterDevice()).toBe(true);
    expect(await readdir(join(base, "store", "tmp"))).toEqual([]);
  });

  it("refuses a blob whose content does not match the DiffID, and stores nothing", async () => {
    const store = new LayerStore(join(base, "store"));
    const { gz } = await makeLayer([{ name: "hello", content: "hi" }]);
    const other = await makeLayer([{ name: "hello", content: "ho" }]);
    await expect(store.ensureLayer(other.diffId, async () => streamOf(gz))).rejects.toMatchObject({ code: "ROOTFS_DIFFID_MISMATCH" });
    expect(await store.has(other.diffId)).toBe(false);
    expect(await readdir(join(base, "store", "tmp"))).toEqual([]);
  });

  it("leaves nothing behind when a layer fails", async () => {
    const store = new LayerStore(join(base, "store"));
    const { gz, diffId } = await makeLayer([{ name: "../escape", content: "x" }]);
    await expect(store.ensureLayer(diffId, async () => streamOf(gz))).rejects.toMatchObject({ code: "ROOTFS_UNSAFE_PATH" });
    expect(await store.has(diffId)).toBe(false);
    expect(await readdir(join(base, "store", "tmp"))).toEqual([]);
    await expectCanaryUntouched();
  });
});
