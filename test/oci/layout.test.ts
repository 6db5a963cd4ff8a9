import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { type Digest, digestOf } from "../../src/oci/digest.js";
import { OciLayout, REF_NAME_ANNOTATION, parseLayoutRef } from "../../src/oci/layout.js";
import { MediaType } from "../../src/oci/media-types.js";
import { gunzipSync } from "node:zlib";

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), "ocibuild-layout-"));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "resolved",
    (e: unknown) => (isOcibuildError(e) ? e.code : `not an OcibuildError: ${String(e)}`),
  );
}

async function drain(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("OciLayout: create and open", () => {
  it("creates oci-layout, an empty index.json and blobs/sha256", async () => {
    const dir = join(tmp, "new/nested");
    const layout = await OciLayout.create(dir);
    expect(layout.dir).toBe(dir);
    expect(JSON.parse(await readFile(join(dir, "oci-layout"), "utf8"))).toEqual({ imageLayoutVersion: "1.0.0" });
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    expect(index).toMatchObject({ schemaVersion: 2, manifests: [] });
    expect(await readdir(join(dir, "blobs"))).toEqual(["sha256"]);
    expect((await readdir(dir)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
  });

  it("create on an existing layout opens it and keeps its index", async () => {
    const dir = join(tmp, "l");
    const a = await OciLayout.create(dir);
    const { digest, size } = await a.writeBlob(Buffer.from("{}"));
    await a.addManifest({ mediaType: MediaType.OCI_MANIFEST, digest, size }, "keep");
    const b = await OciLayout.create(dir);
    expect((await b.resolve("keep"))?.digest).toBe(digest);
  });

  it("refuses a non-empty directory that is not a layout, and an unknown layout version", async () => {
    await writeFile(join(tmp, "precious.txt"), "do not mix");
    expect(await codeOf(OciLayout.create(tmp))).toBe("LAYOUT_DIR_NOT_EMPTY");
    const v2 = join(tmp, "v2");
    await mkdir(v2);
    await writeFile(join(v2, "oci-layout"), JSON.stringify({ imageLayoutVersion: "2.0.0" }));
    expect(await codeOf(OciLayout.create(v2))).toBe("LAYOUT_VERSION_UNSUPPORTED");
    expect(await codeOf(OciLayout.open(v2))).toBe("LAYOUT_VERSION_UNSUPPORTED");
  });

  it("create completes a layout left half-created (blobs/ and index.json, no oci-layout yet)", async () => {
    const dir = join(tmp, "half");
    await mkdir(join(dir, "blobs/sha256"), { recursive: true });
    const index = { schemaVersion: 2, manifests: [{ mediaType: MediaType.OCI_MANIFEST, digest: digestOf("m"), size: 1 }] };
    await writeFile(join(dir, "index.json"), JSON.stringify(index));
    const layout = await OciLayout.create(dir);
    expect((await layout.index()).manifests).toHaveLength(1);
    await expect(OciLayout.open(dir)).resolves.toBeInstanceOf(OciLayout);
  });

  it("open requires an existing layout", async () => {
    expect(await codeOf(OciLayout.open(join(tmp, "missing")))).toBe("LAYOUT_NOT_FOUND");
    expect(await codeOf(OciLayout.open(tmp))).toBe("LAYOUT_NOT_FOUND");
    await OciLayout.create(join(tmp, "ok"));
    await expect(OciLayout.open(join(tmp, "ok"))).resolves.toBeInstanceOf(OciLayout);
  });
});

describe("OciLayout: blobs", () => {
  it("writes bytes and streams under blobs/sha256/<hex of their content>", async () => {
    const layout = await OciLayout.create(tmp);
    const data = Buffer.from("some blob content");
    const a = await layout.writeBlob(data);
    expect(a).toEqual({ digest: `sha256:${hex(data)}`, size: data.length });
    expect((await readFile(layout.blobPath(a.digest))).equals(data)).toBe(true);
    const big = Buffer.alloc(3 * 65536 + 17, 9);
    const b = await layout.writeBlob(Readable.from([big.subarray(0, 70000), big.subarray(70000)]), { digest: digestOf(big), size: big.length });
    expect(b).toEqual({ digest: `sha256:${hex(big)}`, size: big.length });
    expect(await layout.hasBlob(b.digest)).toBe(true);
    expect(await layout.hasBlob(digestOf("absent"))).toBe(false);
    expect(layout.hasBlobNow(b.digest)).toBe(true);
    expect(layout.hasBlobNow(digestOf("absent"))).toBe(false);
  });

  it("rejects content that does not match the expected digest or size, keeping nothing", async () => {
    const layout = await OciLayout.create(tmp);
    const wrong = digestOf("something else");
    expect(await codeOf(layout.writeBlob(Buffer.from("content"), { digest: wrong }))).toBe("DIGEST_MISMATCH");
    expect(await codeOf(layout.writeBlob(Buffer.from("content"), { digest: digestOf("content"), size: 3 }))).toBe("DIGEST_MISMATCH");
    expect(await layout.hasBlob(wrong)).toBe(false);
    expect(await layout.hasBlob(digestOf("content"))).toBe(false);
    expect(layout.hasBlobNow(digestOf("content"))).toBe(false);
    expect((await readdir(tmp)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(await readdir(join(tmp, "blobs/sha256"))).toEqual([]);
  });

  it("does not rewrite a blob that is present; the unread stream is released", async () => {
    const layout = await OciLayout.create(tmp);
    const first = await layout.writeBlob(Buffer.from("x"));
    let reads = 0;
    const src = new Readable({
      read() {
        reads++;
        this.push(null);
      },
    });
    expect(await layout.writeBlob(src, { digest: first.digest })).toEqual({ digest: first.digest, size: 1 });
    expect(reads).toBe(0);
    expect(src.destroyed).toBe(true);
  });

  it("an aborted write rejects with ABORTED and leaves no temp file", async () => {
    const layout = await OciLayout.create(tmp);
    const ac = new AbortController();
    let n = 0;
    const endless = new Readable({
      read() {
        if (++n === 20) ac.abort();
        this.push(Buffer.alloc(65536, 1));
      },
    });
    expect(await codeOf(layout.writeBlob(endless, undefined, ac.signal))).toBe("ABORTED");
    expect((await readdir(tmp)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(await readdir(join(tmp, "blobs/sha256"))).toEqual([]);
  });

  it("reads verify the content: a corrupt blob fails with DIGEST_MISMATCH, a missing one with LAYOUT_BLOB_NOT_FOUND", async () => {
    const layout = await OciLayout.create(tmp);
    const data = Buffer.alloc(200_000, 5);
    const { digest } = await layout.writeBlob(data);
    expect((await drain(layout.readBlob(digest))).equals(data)).toBe(true);
    expect(Buffer.from(await layout.readBlobBytes(digest)).equals(data)).toBe(true);

    const corrupt = Buffer.from(data);
    corrupt[123_456] = 6;
    await writeFile(layout.blobPath(digest), corrupt);
    expect(await codeOf(drain(layout.readBlob(digest)))).toBe("DIGEST_MISMATCH");
    expect(await codeOf(layout.readBlobBytes(digest))).toBe("DIGEST_MISMATCH");

    const ac = new AbortController();
    ac.abort();
    expect(await codeOf(drain(layout.readBlob(digest, ac.signal)))).toBe("ABORTED");

    const absent = digestOf("never written");
    expect(await codeOf(drain(layout.readBlob(absent)))).toBe("LAYOUT_BLOB_NOT_FOUND");
    expect(await codeOf(layout.readBlobBytes(absent))).toBe("LAYOUT_BLOB_NOT_FOUND");
  });
});

describe("OciLayout.writeLayer", () => {
  const base = { uid: 0, gid: 0, mtime: new Date(0), mode: 0o644 };
  it("streams a layer into a blob whose digest and DiffID match the bytes on disk", async () => {
    const layout = await OciLayout.create(tmp);
    const body = Buffer.from("layer content\n");
    const w = await layout.writeLayer([{ ...base, path: "f", type: "file", size: body.length, open: () => Readable.from([body]) }]);
    const gz = await readFile(layout.blobPath(w.digest));
    expect(`sha256:${hex(gz)}`).toBe(w.digest);
    expect(`sha256:${hex(gunzipSync(gz))}`).toBe(w.diffId);
    expect(gz.length).toBe(w.size);
  });

  it("a failing layer leaves no blob and no temp file, and reports the layer error", async () => {
    const layout = await OciLayout.create(tmp);
    const liar = { ...base, path: "f", type: "file" as const, size: 100, open: () => Readable.from([Buffer.from("short")]) };
    expect(await codeOf(layout.writeLayer([liar]))).toBe("LAYER_SIZE_MISMATCH");
    expect((await readdir(tmp)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(await readdir(join(tmp, "blobs/sha256"))).toEqual([]);
  });
});

describe("OciLayout: index.json", () => {
  const desc = (s: string) => ({ mediaType: MediaType.OCI_MANIFEST, digest: digestOf(s), size: s.length });

  it("adds, replaces by ref name, de-duplicates unnamed entries by digest, and resolves", async () => {
    const layout = await OciLayout.create(tmp);
    expect(await layout.resolve()).toBeUndefined();
    await layout.addManifest(desc("one"), "v1");
    expect((await layout.resolve())?.digest).toBe(digestOf("one"));
    await layout.addManifest(desc("two"), "v1");
    await layout.addManifest(desc("three"), "latest");
    await layout.addManifest(desc("four"));
    await layout.addManifest(desc("four"));
    const { manifests } = await layout.index();
    expect(manifests.map((m) => [m.digest, m.annotations?.[REF_NAME_ANNOTATION]])).toEqual([
      [digestOf("two"), "v1"],
      [digestOf("three"), "latest"],
      [digestOf("four"), undefined],
    ]);
    expect((await layout.resolve("v1"))?.digest).toBe(digestOf("two"));
    expect((await layout.resolve(digestOf("three")))?.annotations?.[REF_NAME_ANNOTATION]).toBe("latest");
    expect(await layout.resolve("nope")).toBeUndefined();
    expect(await layout.resolve(digestOf("one"))).toBeUndefined();
    expect(await codeOf(layout.resolve())).toBe("LAYOUT_REF_AMBIGUOUS");
    expect(await codeOf(layout.addManifest(desc("x"), "bad tag"))).toBe("LAYOUT_REF_INVALID");
    // The file on disk is what index() parsed, and no temp file is left.
    expect(JSON.parse(await readFile(join(tmp, "index.json"), "utf8")).manifests).toHaveLength(3);
    expect((await readdir(tmp)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
  });

  it("concurrent addManifest calls on one layout lose no entry", async () => {
    const layout = await OciLayout.create(tmp);
    await Promise.all(Array.from({ length: 12 }, (_, i) => layout.addManifest(desc(`m${i}`), `t${i}`)));
    const tags = (await layout.index()).manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).sort();
    expect(tags).toEqual(Array.from({ length: 12 }, (_, i) => `t${i}`).sort());
  });

  it("a corrupt index.json is reported as LAYOUT_INVALID", async () => {
    const layout = await OciLayout.create(tmp);
    await writeFile(join(tmp, "index.json"), "{not json");
    expect(await codeOf(layout.index())).toBe("LAYOUT_INVALID");
  });
});

describe("parseLayoutRef", () => {
  const d = `sha256:${"ab".repeat(32)}` as Digest;
  it.each([
    ["oci:out", { dir: "out" }],
    ["oci:/tmp/out:v1", { dir: "/tmp/out", ref: "v1" }],
    ["oci:./out:registry.example.com/app:1.0", { dir: "./out", ref: "registry.example.com/app:1.0" }],
    [`oci:/tmp/out@${d}`, { dir: "/tmp/out", ref: d }],
    ["oci:rel/dir:latest", { dir: "rel/dir", ref: "latest" }],
  ])("%s", (s, want) => {
    expect(parseLayoutRef(s)).toEqual(want);
  });

  it.each([
    ["out:v1", "no oci: prefix"],
    ["oci:", "no directory"],
    ["oci::tag", "no directory"],
    ["oci:dir:bad tag", "space in the reference"],
    ["oci:dir:", "empty reference"],
    [`oci:dir@sha256:abc`, "short digest"],
  ])("rejects %j (%s) with LAYOUT_REF_INVALID", (s) => {
    let code = "none";
    try {
      parseLayoutRef(s);
    } catch (e) {
      code = isOcibuildError(e) ? e.code : String(e);
    }
    expect(code).toBe("LAYOUT_REF_INVALID");
  });
});

describe("OciLayout.writeBlob from a source that verifies itself (sourceVerified)", () => {
  const verified = async (bytes: Buffer, digest: Digest, size?: number) => {
    const { VerifyingStream } = await import("../../src/oci/digest.js");
    const { pipeline } = await import("node:stream");
    const v = new VerifyingStream(digest, size);
    return pipeline(Readable.from([bytes.subarray(0, 5), bytes.subarray(5)]), v, () => {});
  };

  it("stores what the source let through, with its size", async () => {
    const layout = await OciLayout.create(tmp);
    const data = Buffer.alloc(200_000, 7);
    const d = digestOf(data);
    expect(await layout.writeBlob(await verified(data, d, data.length), { digest: d, size: data.length }, undefined, { sourceVerified: true })).toEqual({
      digest: d,
      size: data.length,
    });
    expect((await readFile(layout.blobPath(d))).equals(data)).toBe(true);
  });

  it("keeps nothing when the source fails its own check, or when the size is not the expected one", async () => {
    const layout = await OciLayout.create(tmp);
    const data = Buffer.from("the bytes that arrived");
    const claimed = digestOf("the bytes that were promised");
    expect(await codeOf(layout.writeBlob(await verified(data, claimed), { digest: claimed }, undefined, { sourceVerified: true }))).toBe("DIGEST_MISMATCH");
    const d = digestOf(data);
    expect(await codeOf(layout.writeBlob(await verified(data, d), { digest: d, size: data.length + 1 }, undefined, { sourceVerified: true }))).toBe("DIGEST_MISMATCH");
    // Bytes in memory are always hashed here.
    expect(await codeOf(layout.writeBlob(data, { digest: claimed }, undefined, { sourceVerified: true }))).toBe("DIGEST_MISMATCH");
    expect((await readdir(tmp)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
    expect(await readdir(join(tmp, "blobs/sha256"))).toEqual([]);
  });
});
