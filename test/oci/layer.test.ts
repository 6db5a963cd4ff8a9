import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { lstat, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { gunzipSync } from "node:zlib";
import { extract } from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { type LayerEntry, tarChunks, writeLayer, writeLayerToDir } from "../../src/oci/layer.js";
import { MediaType } from "../../src/oci/media-types.js";

const GOLDEN = new URL("../../testdata/oci/golden-layer.tar", import.meta.url).pathname;
const T = new Date("2021-03-04T05:06:07Z");
const isRoot = process.getuid?.() === 0;
const haveTar = existsSync("/usr/bin/tar");

function content(s: string | Buffer): Pick<LayerEntry, "size" | "open"> {
  const b = Buffer.isBuffer(s) ? s : Buffer.from(s);
  // Split the content in several chunks so the writer sees a real stream.
  return { size: b.length, open: () => Readable.from([b.subarray(0, 3), b.subarray(3)].filter((c) => c.length > 0)) };
}

const LONG_DIR = `deep/${"d".repeat(60)}/${"e".repeat(60)}`;
const LONG_FILE = `${LONG_DIR}/${"f".repeat(30)}.txt`;

/** A fixed set covering every entry type and every PAX reason. */
function fixture(): LayerEntry[] {
  const base = { uid: 0, gid: 0, mtime: T };
  return [
    { ...base, path: "bin", type: "directory", mode: 0o755 },
    { ...base, path: "bin/hello", type: "file", mode: 0o4755, ...content("#!/bin/sh\necho hello\n") },
    { ...base, path: "bin/hi", type: "hardlink", mode: 0o4755, linkname: "bin/hello" },
    { ...base, path: "bin/sh", type: "symlink", mode: 0o777, linkname: "/usr/bin/busybox" },
    { ...base, path: "deep", type: "directory", mode: 0o700 },
    { ...base, path: LONG_DIR, type: "directory", mode: 0o755 },
    { ...base, path: LONG_FILE, type: "file", mode: 0o644, ...content("long name\n") },
    { ...base, path: "dev", type: "directory", mode: 0o755 },
    { ...base, path: "dev/null", type: "char", mode: 0o666, devmajor: 1, devminor: 3 },
    { ...base, path: "dev/loop0", type: "block", mode: 0o660, gid: 6, devmajor: 7, devminor: 0 },
    { ...base, path: "dev/pipe", type: "fifo", mode: 0o600 },
    { ...base, path: "etc", type: "directory", mode: 0o755 },
    { ...base, path: "etc/.wh.removed", type: "file", mode: 0o600, size: 0 },
    { ...base, path: "etc/café.txt", type: "file", mode: 0o644, uname: "root", gname: "root", ...content("unicode\n") },
    { ...base, path: "etc/empty", type: "file", mode: 0o640, size: 0 },
    { ...base, path: "etc/far-link", type: "symlink", mode: 0o777, linkname: `../${LONG_FILE}` },
    {
      ...base,
      path: "etc/xattr",
      type: "file",
      mode: 0o644,
      uid: 3_000_000,
      gid: 1000,
      xattrs: { "user.comment": Buffer.from("hello é"), "security.capability": Buffer.from([1, 0, 0, 2, 0, 32, 0, 0]) },
      ...content(Buffer.alloc(700, 0x61)),
    },
    { ...base, path: "tmp", type: "directory", mode: 0o1777 },
  ];
}

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

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

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface Extracted {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  linkname: string | null | undefined;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
  body: Buffer;
}

async function extractAll(tar: Buffer): Promise<Extracted[]> {
  const ex = extract();
  const out: Extracted[] = [];
  const done = (async () => {
    for await (const entry of ex) {
      const h = entry.header as typeof entry.header & { pax?: Record<string, string> };
      const body = await collect(entry as AsyncIterable<Buffer>);
      out.push({
        name: h.name,
        type: h.type ?? "",
        mode: h.mode ?? -1,
        uid: h.pax?.uid ? Number(h.pax.uid) : (h.uid ?? -1),
        gid: h.pax?.gid ? Number(h.pax.gid) : (h.gid ?? -1),
        mtime: (h.mtime?.getTime() ?? 0) / 1000,
        size: h.size ?? 0,
        linkname: h.linkname,
        devmajor: h.devmajor,
        devminor: h.devminor,
        pax: h.pax,
        body,
      });
    }
  })();
  ex.end(tar);
  await done;
  return out;
}

const TAR_TYPE: Record<string, string> = {
  file: "file",
  hardlink: "link",
  symlink: "symlink",
  char: "character-device",
  block: "block-device",
  directory: "directory",
  fifo: "fifo",
};

describe("layer writer: golden tar bytes", () => {
  it("writes exactly the checked-in tar for the fixture", async () => {
    const tar = await collect(tarChunks(fixture()));
    if (process.env.UPDATE_GOLDEN === "1") writeFileSync(GOLDEN, tar);
    expect(tar.equals(readFileSync(GOLDEN))).toBe(true);
  });

  it("reports DiffID, digest and sizes that match an independent gunzip + sha256", async () => {
    const sink = new Sink();
    const w = await writeLayer(fixture(), sink);
    const gz = sink.bytes;
    const tar = gunzipSync(gz);
    expect(tar.equals(readFileSync(GOLDEN))).toBe(true);
    expect(w.mediaType).toBe(MediaType.OCI_LAYER_GZIP);
    expect(w.diffId).toBe(sha256(tar));
    expect(w.digest).toBe(sha256(gz));
    expect(w.size).toBe(gz.length);
    expect(w.uncompressedSize).toBe(tar.length);
    // gzip header: no FNAME flag, MTIME zero (RFC 1952 bytes 3..7).
    expect(gz[0]).toBe(0x1f);
    expect(gz[3]! & 0x08).toBe(0);
    expect(gz.readUInt32LE(4)).toBe(0);
  });

  it("is deterministic: same entries twice give the same digest", async () => {
    const a = await writeLayer(fixture(), new Sink());
    const b = await writeLayer(fixture(), new Sink());
    expect(b.digest).toBe(a.digest);
    expect(b.diffId).toBe(a.diffId);
  });

  it("clamps mtimes to sourceDateEpoch, so later mtimes give the same digest", async () => {
    const epoch = Math.floor(T.getTime() / 1000);
    const later = fixture().map((e, i) => ({ ...e, mtime: new Date(T.getTime() + (i + 1) * 86_400_000) }));
    const clamped = await writeLayer(later, new Sink(), { sourceDateEpoch: epoch });
    const plain = await writeLayer(fixture(), new Sink());
    expect(clamped.digest).toBe(plain.digest);
    const unclamped = await writeLayer(later, new Sink());
    expect(unclamped.digest).not.toBe(plain.digest);
    // Earlier mtimes are kept as they are.
    const earlier = fixture().map((e) => ({ ...e, mtime: new Date(0) }));
    const tar = await collect(tarChunks(earlier, { sourceDateEpoch: epoch }));
    expect((await extractAll(tar)).every((e) => e.mtime === 0)).toBe(true);
  });

  it("different compression levels change the digest but never the DiffID", async () => {
    const l1 = await writeLayer(fixture(), new Sink(), { compressionLevel: 1 });
    const l9 = await writeLayer(fixture(), new Sink(), { compressionLevel: 9 });
    expect(l1.diffId).toBe(l9.diffId);
  });
});

describe("layer writer: round trips", () => {
  it("every entry type round-trips through tar-stream's extract", async () => {
    const entries = fixture();
    const got = await extractAll(await collect(tarChunks(entries)));
    expect(got.map((g) => g.name)).toEqual(entries.map((e) => (e.type === "directory" ? `${e.path}/` : e.path)));
    for (const [i, e] of entries.entries()) {
      const g = got[i]!;
      expect(g.type, e.path).toBe(TAR_TYPE[e.type]);
      expect(g.mode, e.path).toBe(e.mode & 0o7777);
      expect([g.uid, g.gid], e.path).toEqual([e.uid, e.gid]);
      expect(g.mtime, e.path).toBe(T.getTime() / 1000);
      if (e.type === "symlink" || e.type === "hardlink") expect(g.linkname, e.path).toBe(e.linkname);
      if (e.type === "char" || e.type === "block") expect([g.devmajor, g.devminor], e.path).toEqual([e.devmajor, e.devminor]);
      if (e.type === "file") {
        const want = e.size === 0 ? Buffer.alloc(0) : await collect((await e.open!()) as AsyncIterable<Buffer>);
        expect(g.body.equals(want), e.path).toBe(true);
      }
      for (const [k, v] of Object.entries(e.xattrs ?? {})) {
        // tar-stream decodes record values as UTF-8; compare the same way.
        expect(g.pax?.[`SCHILY.xattr.${k}`], `${e.path} ${k}`).toBe(v.toString("utf8"));
      }
    }
    // The long name and the long link target needed PAX records; the short ones did not.
    expect(got.find((g) => g.name === LONG_FILE)?.pax?.path).toBe(LONG_FILE);
    expect(got.find((g) => g.name === "etc/far-link")?.pax?.linkpath).toBe(`../${LONG_FILE}`);
    expect(got.find((g) => g.name === "etc/xattr")?.pax?.uid).toBe("3000000");
    expect(got.find((g) => g.name === "etc/café.txt")?.pax?.path).toBe("etc/café.txt");
    expect(got.find((g) => g.name === "bin/hello")?.pax ?? undefined).toBeUndefined();
  });

  describe.skipIf(!haveTar)("GNU tar (needs /usr/bin/tar)", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "ocibuild-layer-"));
      await writeFile(join(dir, "layer.tar"), await collect(tarChunks(fixture())));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it("tar -tvf lists every entry with its type, mode, owner, size and link", () => {
      const listing = execFileSync("tar", ["--numeric-owner", "-tvf", join(dir, "layer.tar")], { encoding: "utf8", env: { TZ: "UTC", LC_ALL: "C.UTF-8" } })
        .trim()
        .split("\n");
      const entries = fixture();
      expect(listing).toHaveLength(entries.length);
      const typeChar: Record<string, string> = { file: "-", hardlink: "h", symlink: "l", char: "c", block: "b", directory: "d", fifo: "p" };
      for (const [i, e] of entries.entries()) {
        const line = listing[i]!;
        const [perm, owner] = line.split(/\s+/);
        expect(perm![0], line).toBe(typeChar[e.type]);
        const bits = e.mode & 0o777;
        const rwx = [6, 3, 0].map((s) => ((bits >> s) & 4 ? "r" : "-") + ((bits >> s) & 2 ? "w" : "-") + ((bits >> s) & 1 ? "x" : "-")).join("");
        const shown = perm!.slice(1).replace(/[st]/g, "x").replace(/[ST]/g, "-");
        expect(shown, line).toBe(rwx);
        expect(owner, line).toBe(`${e.uid}/${e.gid}`);
        expect(line, line).toContain("2021-03-04 05:06");
        const name = e.type === "directory" ? `${e.path}/` : e.path;
        if (e.type === "symlink") expect(line.endsWith(`${name} -> ${e.linkname}`), line).toBe(true);
        else if (e.type === "hardlink") expect(line.endsWith(`${name} link to ${e.linkname}`), line).toBe(true);
        else expect(line.endsWith(` ${name}`), line).toBe(true);
        if (e.type === "file") expect(line, line).toMatch(new RegExp(`\\s${e.size}\\s2021`));
        if (e.type === "char" || e.type === "block") expect(line, line).toContain(`${e.devmajor},${e.devminor}`);
      }
      expect(listing[1]).toMatch(/^-rwsr-xr-x/);
      expect(listing.at(-1)).toMatch(/^drwxrwxrwt/);
    });

    it("tar --xattrs sees the SCHILY.xattr records", () => {
      const out = execFileSync("tar", ["--xattrs", "--xattrs-include=*", "-tvvvf", join(dir, "layer.tar")], { encoding: "utf8", env: { TZ: "UTC" } });
      expect(out).toContain("user.comment");
      expect(out).toContain("security.capability");
    });

    it.skipIf(!isRoot)("tar -xpf as root restores files, links, devices and owners (needs root)", async () => {
      const root = join(dir, "x");
      execFileSync("mkdir", [root]);
      execFileSync("tar", ["--numeric-owner", "-xpf", join(dir, "layer.tar"), "-C", root]);
      for (const e of fixture()) {
        const p = join(root, e.path);
        const st = await lstat(p);
        expect(st.mode & 0o7777, e.path).toBe(e.mode & 0o7777);
        expect([st.uid, st.gid], e.path).toEqual([e.uid, e.gid]);
        if (e.type !== "symlink") expect(st.mtimeMs, e.path).toBe(T.getTime());
        if (e.type === "symlink") expect(await readlink(p)).toBe(e.linkname);
        if (e.type === "hardlink") expect(st.ino).toBe((await stat(join(root, e.linkname!))).ino);
        if (e.type === "fifo") expect(st.isFIFO()).toBe(true);
        if (e.type === "char") expect(st.isCharacterDevice()).toBe(true);
        if (e.type === "block") expect(st.isBlockDevice()).toBe(true);
        if (e.type === "file" && e.size! > 0) {
          expect((await readFile(p)).equals(await collect((await e.open!()) as AsyncIterable<Buffer>)), e.path).toBe(true);
        }
      }
    });
  });
});

describe("layer writer: errors and abort", () => {
  async function code(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (e) {
      return isOcibuildError(e) ? e.code : `not an OcibuildError: ${String(e)}`;
    }
    return "resolved";
  }
  const base = { uid: 0, gid: 0, mtime: T, mode: 0o644 };

  it.each([
    ["/abs", "absolute"],
    ["a/../b", "dot-dot"],
    ["./a", "dot"],
    ["a//b", "empty component"],
    ["a/", "trailing slash"],
    ["", "empty"],
  ])("rejects the path %j (%s) with LAYER_ENTRY_INVALID", async (path) => {
    expect(await code(writeLayer([{ ...base, path, type: "directory" }], new Sink()))).toBe("LAYER_ENTRY_INVALID");
  });

  it("rejects a file without size, a link without target, a bad compression level", async () => {
    expect(await code(writeLayer([{ ...base, path: "f", type: "file" }], new Sink()))).toBe("LAYER_ENTRY_INVALID");
    expect(await code(writeLayer([{ ...base, path: "l", type: "symlink" }], new Sink()))).toBe("LAYER_ENTRY_INVALID");
    expect(await code(writeLayer([{ ...base, path: "h", type: "hardlink", linkname: "../etc/shadow" }], new Sink()))).toBe("LAYER_ENTRY_INVALID");
    expect(await code(writeLayer([{ ...base, path: "h", type: "hardlink", linkname: "/etc/shadow" }], new Sink()))).toBe("LAYER_ENTRY_INVALID");
    expect(await code(writeLayer([], new Sink(), { compressionLevel: 12 }))).toBe("LAYER_OPTIONS_INVALID");
  });

  it("fails with LAYER_SIZE_MISMATCH when content is shorter or longer than declared", async () => {
    const short = { ...base, path: "f", type: "file" as const, size: 10, open: () => Readable.from([Buffer.from("abc")]) };
    const long = { ...base, path: "f", type: "file" as const, size: 2, open: () => Readable.from([Buffer.from("abc")]) };
    expect(await code(writeLayer([short], new Sink()))).toBe("LAYER_SIZE_MISMATCH");
    expect(await code(writeLayer([long], new Sink()))).toBe("LAYER_SIZE_MISMATCH");
  });

  it("wraps a content read error with the entry path", async () => {
    const bad = { ...base, path: "x/y", type: "file" as const, size: 5, open: () => { throw new Error("EACCES: nope"); } };
    const err = await writeLayer([bad], new Sink()).catch((e: unknown) => e);
    expect(isOcibuildError(err) && err.code).toBe("LAYER_CONTENT_READ_FAILED");
    expect((err as Error).message).toContain("x/y");
  });

  it("an abort mid-layer rejects with ABORTED and writeLayerToDir leaves nothing behind", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-abort-"));
    try {
      const ac = new AbortController();
      let sent = 0;
      // An endless-looking file that aborts the write once 1 MiB has gone through.
      const big: LayerEntry = {
        ...base,
        path: "big",
        type: "file",
        size: 1 << 30,
        open: () =>
          new Readable({
            read() {
              sent += 65536;
              if (sent > 1 << 20) ac.abort(new Error("user pressed Ctrl-C"));
              this.push(Buffer.alloc(65536, 7));
            },
          }),
      };
      expect(await code(writeLayerToDir([big], dir, { signal: ac.signal }))).toBe("ABORTED");
      expect(await readdir(dir)).toEqual([]);
      // And a failure (not an abort) cleans up as well.
      expect(await code(writeLayerToDir([{ ...base, path: "../x", type: "fifo" }], dir))).toBe("LAYER_ENTRY_INVALID");
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("writeLayerToDir names the file by its digest", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-todir-"));
    try {
      const w = await writeLayerToDir(fixture(), dir);
      expect(w.path).toBe(join(dir, w.digest.slice("sha256:".length)));
      const gz = await readFile(w.path);
      expect(sha256(gz)).toBe(w.digest);
      expect(sha256(gunzipSync(gz))).toBe(w.diffId);
      expect(await readdir(dir)).toEqual([w.digest.slice("sha256:".length)]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
