import { execFileSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { writeLayer, type LayerEntry } from "../../../src/oci/layer.js";
import { extractLayer } from "../../../src/builder/fs/extract.js";
import { getXattrs } from "../../../src/builder/fs/native.js";
import { readTar, tarBytes } from "../../../src/builder/fs/tar-reader.js";
import { haveTool, isRoot } from "../../../testdata/builder/fixtures.js";

let base: string;
beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "ocibuild-tar-"));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function entriesOf(buf: Buffer): Promise<{ name: string; type: string; uid: number; size: number; linkname: string; body: string }[]> {
  const out = [];
  for await (const e of readTar(Readable.from([buf]))) {
    const chunks: Buffer[] = [];
    if (e.header.name.endsWith("read")) for await (const c of e.body) chunks.push(c);
    out.push({ name: e.header.name, type: e.header.type, uid: e.header.uid, size: e.header.size, linkname: e.header.linkname, body: Buffer.concat(chunks).toString() });
  }
  return out;
}

describe.skipIf(!haveTool("tar"))("readTar against GNU tar's formats (needs tar)", () => {
  const long = `${"a".repeat(80)}/${"b".repeat(80)}/file-read`;

  async function tree(): Promise<string> {
    const src = join(base, "src");
    await mkdir(join(src, "a".repeat(80), "b".repeat(80)), { recursive: true });
    await writeFile(join(src, long), "long name content");
    await writeFile(join(src, "skipped"), "x".repeat(5000));
    await writeFile(join(src, "after-read"), "after");
    await symlink(`${"t".repeat(120)}`, join(src, "longlink"));
    return src;
  }

  it.each(["gnu", "pax", "ustar"])("reads long names, skips unread bodies (--format=%s)", async (format) => {
    const src = await tree();
    const args = ["-C", src, `--format=${format}`, "--owner=4000000", "--group=0", "--numeric-owner", "-cf", "-", "."];
    if (format === "ustar") args.splice(args.indexOf("--owner=4000000"), 1, "--owner=1000"); // ustar cannot hold big ids
    if (format === "ustar") args.splice(args.indexOf("."), 1, long.split("/").slice(0, 1)[0]!, "skipped", "after-read"); // nor 120-char link targets
    const buf = execFileSync("tar", args, { maxBuffer: 64 << 20 });
    const entries = await entriesOf(buf);
    const byName = new Map(entries.map((e) => [e.name.replace(/^\.\//, ""), e]));
    expect(byName.get(long)?.body).toBe("long name content");
    expect(byName.get("after-read")?.body).toBe("after");
    expect(byName.get("skipped")?.size).toBe(5000);
    expect(byName.get(long)?.uid).toBe(format === "ustar" ? 1000 : 4000000);
    if (format !== "ustar") expect(byName.get("longlink")).toMatchObject({ type: "symlink", linkname: "t".repeat(120) });
  });

  it("refuses a corrupted header with a coded error", async () => {
    const src = await tree();
    const buf = execFileSync("tar", ["-C", src, "-cf", "-", "skipped"]);
    buf[10] = buf[10]! ^ 0xff;
    await expect(entriesOf(buf)).rejects.toMatchObject({ code: "ROOTFS_TAR_INVALID" });
  });
});

describe.skipIf(!isRoot)("binary xattrs survive writeLayer -> extractLayer (needs root)", () => {
  it("keeps security.capability bytes intact", async () => {
    const cap = Buffer.from("0000000202040000000000000000000000000000", "hex");
    const content = Buffer.from("binary");
    const entries: LayerEntry[] = [
      { path: "bin", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: new Date(0) },
      {
        path: "bin/ping",
        type: "file",
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: new Date(0),
        size: content.length,
        xattrs: { "security.capability": cap, "user.bin": Buffer.from([0, 1, 255]) },
        open: () => Readable.from([content]),
      },
    ];
    const layer = join(base, "layer.tgz");
    const { createWriteStream } = await import("node:fs");
    await writeLayer(entries, createWriteStream(layer));
    const root = join(base, "root");
    await mkdir(root);
    const warnings: string[] = [];
    await extractLayer(root, createReadStream(layer), { onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(await readFile(join(root, "bin/ping"))).toEqual(content);
    expect((await lstat(join(root, "bin/ping"))).mode & 0o7777).toBe(0o755);
    const x = await getXattrs([join(root, "bin/ping")]);
    expect(x.get(join(root, "bin/ping"))).toEqual({ "security.capability": cap, "user.bin": Buffer.from([0, 1, 255]) });
  });
});

describe("readTar: takeBuffered and chunking", () => {
  it("gives the same entries and bodies however the input is cut (7 bytes to whole) and however each body is read", async () => {
    const { makeTar } = await import("../../../testdata/builder/fixtures.js");
    const specs = [0, 1, 100, 511, 512, 513, 1500, 4096, 10_000, 70_000].map((n, i) => ({ name: `f${i}`, content: String.fromCharCode(97 + i).repeat(n) }));
    const tar = await makeTar([...specs, { name: "d/", type: "directory" }, { name: "l", type: "symlink", linkname: "f1" }]);
    const want = [...specs.map((s) => `${s.name}=${s.content.length}`), "d/=0", "l=0"];
    for (const cut of [7, 512, 3000, 65536, tar.length]) {
      // Uint8Array chunks (not Buffers) as some streams give them.
      const parts: Uint8Array[] = [];
      for (let i = 0; i < tar.length; i += cut) parts.push(new Uint8Array(tar.subarray(i, i + cut)));
      for (const how of ["take", "iterate", "skip"] as const) {
        const got: string[] = [];
        let i = 0;
        for await (const e of readTar(Readable.from(parts))) {
          const spec = specs.find((s) => s.name === e.header.name);
          const mode = how === "skip" && i++ % 2 === 0 ? "skip" : how;
          if (mode === "skip") {
            got.push(`${e.header.name}=${e.header.type === "file" ? e.header.size : 0}`);
            continue;
          }
          let body = mode === "take" ? e.takeBuffered() : undefined;
          if (body === undefined) {
            const chunks: Buffer[] = [];
            for await (const c of e.body) chunks.push(c);
            body = Buffer.concat(chunks);
          } else expect(() => e.takeBuffered()).toThrow(/twice/);
          if (spec) expect(body.toString()).toBe(spec.content);
          got.push(`${e.header.name}=${body.length}`);
        }
        expect([cut, how, got]).toEqual([cut, how, want]);
      }
    }
  });
});

describe("tarBytes: a compressed layer's bytes", () => {
  async function all(r: AsyncIterable<Buffer>): Promise<Buffer> {
    const out: Buffer[] = [];
    for await (const c of r) out.push(c);
    return Buffer.concat(out);
  }

  it("come out whole however the compressed stream is cut (tiny pieces, pieces across the batch size, one big piece)", async () => {
    const { gzipSync } = await import("node:zlib");
    const { randomBytes } = await import("node:crypto");
    // Half random, half repetitive: about 1.6 MB compressed, so the pieces span several batches.
    const plain = Buffer.concat([randomBytes(3 << 19), Buffer.alloc(3 << 19, 7)]);
    const gz = gzipSync(plain);
    for (const piece of [7, 65536, (1 << 20) + 5, gz.length]) {
      const pieces: Buffer[] = [];
      for (let i = 0; i < gz.length; i += piece) pieces.push(gz.subarray(i, i + piece));
      const got = await all(await tarBytes(Readable.from(pieces), undefined));
      expect(got.equals(plain)).toBe(true);
    }
  });
});
