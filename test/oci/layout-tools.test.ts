/**
 * What we write must be read by the real tools: oci-image-tool validates the
 * layout, skopeo inspects it, umoci unpacks it into a bundle.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OciLayout } from "../../src/oci/layout.js";
import { GZIP_MEMBER_BYTES } from "../../src/oci/layer-gzip.js";
import { type LayerEntry, writeLayer } from "../../src/oci/layer.js";
import { type ImageConfig, type ImageManifest, descriptorOf, encodeJson } from "../../src/oci/manifest.js";
import { MediaType } from "../../src/oci/media-types.js";

const run = promisify(execFile);
const have = (bin: string) => existsSync(`/usr/bin/${bin}`);
const isRoot = process.getuid?.() === 0;
const HELLO = "hello from ocibuild\n";
const MTIME = new Date("2024-05-06T07:08:09Z");

function entries(): LayerEntry[] {
  const base = { uid: 0, gid: 0, mtime: MTIME };
  const body = Buffer.from(HELLO);
  return [
    { ...base, path: "app", type: "directory", mode: 0o755 },
    { ...base, path: "app/hello.txt", type: "file", mode: 0o640, size: body.length, open: () => Readable.from([body]) },
    { ...base, path: "app/link", type: "symlink", mode: 0o777, linkname: "hello.txt" },
  ];
}

/**
 * A layer of several gzip members (the writer cuts the tar every GZIP_MEMBER_BYTES):
 * one file of numbered lines, 2.5 members long.
 */
function bigEntries(): { entries: LayerEntry[]; body: Buffer } {
  const lines: string[] = [];
  for (let i = 0, n = 0; n < 2.5 * GZIP_MEMBER_BYTES; i++) {
    const line = `line ${i} of a layer cut into several gzip members\n`;
    lines.push(line);
    n += line.length;
  }
  const body = Buffer.from(lines.join(""));
  const base = { uid: 0, gid: 0, mtime: MTIME };
  return {
    body,
    entries: [
      { ...base, path: "app", type: "directory", mode: 0o755 },
      { ...base, path: "app/big.txt", type: "file", mode: 0o644, size: body.length, open: () => Readable.from([body.subarray(0, 1000), body.subarray(1000)]) },
    ],
  };
}

/** Writes a one-layer image into `dir`, streaming the layer straight into the layout. */
async function writeImage(dir: string, tag: string, layerEntries: LayerEntry[] = entries()) {
  const layout = await OciLayout.create(dir);
  const pipe = new PassThrough();
  const [layer, blob] = await Promise.all([writeLayer(layerEntries, pipe), layout.writeBlob(pipe)]);
  expect(blob).toEqual({ digest: layer.digest, size: layer.size });
  const config = encodeJson<ImageConfig>(MediaType.OCI_CONFIG, {
    created: MTIME.toISOString(),
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/app/hello.txt"], WorkingDir: "/app" },
    rootfs: { type: "layers", diff_ids: [layer.diffId] },
    history: [{ created: MTIME.toISOString(), created_by: "COPY hello.txt /app/" }],
  });
  await layout.writeBlob(config.bytes, { digest: config.digest, size: config.bytes.length });
  const manifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: descriptorOf(config),
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
  });
  await layout.writeBlob(manifest.bytes, { digest: manifest.digest, size: manifest.bytes.length });
  await layout.addManifest(descriptorOf(manifest), tag);
  return { layout, layer, config, manifest };
}

let tmp: string;
let dir: string;
let image: Awaited<ReturnType<typeof writeImage>>;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "ocibuild-layout-tools-"));
  dir = join(tmp, "layout");
  image = await writeImage(dir, "v1");
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("layout read back by our own reader", () => {
  it("resolves the tag and reads the verified manifest and config", async () => {
    const layout = await OciLayout.open(dir);
    const desc = await layout.resolve("v1");
    expect(desc?.digest).toBe(image.manifest.digest);
    const bytes = await layout.readBlobBytes(desc!.digest);
    expect(Buffer.from(bytes).equals(Buffer.from(image.manifest.bytes))).toBe(true);
  });
});

describe.skipIf(!have("oci-image-tool"))("oci-image-tool validate (needs oci-image-tool)", () => {
  it("accepts the layout as an image with ref name v1", async () => {
    const { stdout, stderr } = await run("oci-image-tool", ["validate", "--type", "image", "--ref", "name=v1", dir]);
    expect(`${stdout}${stderr}`).toMatch(/validation succeeded/i);
  });

  it("rejects a copy whose layer blob is missing (the check can fail)", async () => {
    const broken = join(tmp, "broken");
    await cp(dir, broken, { recursive: true });
    await rm(join(broken, "blobs/sha256", image.layer.digest.slice("sha256:".length)));
    const err = await run("oci-image-tool", ["validate", "--type", "image", "--ref", "name=v1", broken]).catch((e: { stderr?: string }) => e);
    expect((err as { stderr?: string }).stderr).toContain(image.layer.digest.slice("sha256:".length));
  });
});

describe.skipIf(!have("skopeo"))("skopeo inspect (needs skopeo)", () => {
  it("reads the manifest digest, layers and config through oci:DIR:TAG", async () => {
    const { stdout } = await run("skopeo", ["inspect", `oci:${dir}:v1`]);
    const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Architecture: string; Os: string; Env: string[] };
    expect(info.Digest).toBe(image.manifest.digest);
    expect(info.Layers).toEqual([image.layer.digest]);
    expect([info.Os, info.Architecture]).toEqual(["linux", "amd64"]);
    const cfg = JSON.parse((await run("skopeo", ["inspect", "--config", `oci:${dir}:v1`])).stdout) as ImageConfig;
    expect(cfg.rootfs.diff_ids).toEqual([image.layer.diffId]);
    expect(cfg.config?.WorkingDir).toBe("/app");
  });
});

describe.skipIf(!have("umoci") || !isRoot)("umoci unpack (needs umoci and root)", () => {
  it("unpacks the image to a bundle whose rootfs holds the file with its content and mode", async () => {
    const bundle = join(tmp, "bundle");
    await run("umoci", ["unpack", "--image", `${dir}:v1`, bundle]);
    expect(await readFile(join(bundle, "rootfs/app/hello.txt"), "utf8")).toBe(HELLO);
    expect((await stat(join(bundle, "rootfs/app/hello.txt"))).mode & 0o7777).toBe(0o640);
    expect(await readFile(join(bundle, "rootfs/app/link"), "utf8")).toBe(HELLO);
    const runtime = JSON.parse(await readFile(join(bundle, "config.json"), "utf8")) as { process: { cwd: string; args: string[] } };
    expect(runtime.process.cwd).toBe("/app");
    expect(runtime.process.args).toEqual(["/app/hello.txt"]);
  });

  it("unpacks an image whose layer is several gzip members to the exact file", async () => {
    const big = bigEntries();
    const bigDir = join(tmp, "big-layout");
    const img = await writeImage(bigDir, "big", big.entries);
    expect(img.layer.uncompressedSize).toBeGreaterThan(2 * GZIP_MEMBER_BYTES);
    const bundle = join(tmp, "big-bundle");
    await run("umoci", ["unpack", "--image", `${bigDir}:big`, bundle]);
    const got = await readFile(join(bundle, "rootfs/app/big.txt"));
    expect(got.length).toBe(big.body.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(createHash("sha256").update(big.body).digest("hex"));
  });
});
