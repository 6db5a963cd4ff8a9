/**
 * A base image's layers are checked wherever ocibuild touches them: a cached base
 * blob that was damaged on disk is never pushed (it is dropped and fetched again
 * from the base's registry), and a base whose config lists a DiffID its layer does
 * not decompress to is refused whether its layers are extracted, pushed or written
 * out, the check recorded per blob so that it is not repeated. Two real registries:
 * the base lives on one (behind a proxy that logs requests), the image is pushed to
 * the other (so its blobs are uploaded, not mounted).
 */
import { readFile, writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { diffIdOf, hexOf, type Digest, type DiffID } from "../../src/oci/digest.js";
import { encodeJson, type ImageConfig, type ImageManifest } from "../../src/oci/manifest.js";
import { MediaType } from "../../src/oci/media-types.js";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { type FaultProxy, startFaultProxy } from "../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { isRoot } from "../helpers/tools.js";
import { collect, imageOf, pushImage, type TestImage } from "../oci/registry/images.js";

describe.skipIf(!isRoot || !haveRegistry())("base layer integrity (needs root, docker-registry)", () => {
  let baseReg: TestRegistry;
  let target: TestRegistry;
  let work: string;
  let base: TestImage;
  const client = new RegistryClient();

  beforeAll(async () => {
    baseReg = await startRegistry();
    target = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-base-integrity-"));
    base = await imageOf("amd64", { "etc/base.txt": "the base layer\n".repeat(1000) });
    await pushImage(client, parseReference(`${baseReg.host}/base/img:v1`), base);
  });
  afterAll(async () => {
    await client.close();
    await baseReg?.stop();
    await target?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function context(name: string, dockerfile: string): Promise<string> {
    const dir = join(work, name);
    const { mkdir } = await import("node:fs/promises");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    await writeFile(join(dir, "f.txt"), "from the context\n");
    return dir;
  }

  it("drops a corrupt cached base blob and pushes the right bytes, fetched again from the base's registry", async () => {
    const ctx = await context("corrupt", `FROM ${baseReg.host}/base/img:v1\nCOPY f.txt /f.txt\n`);
    const cacheDir = join(work, "cache-corrupt");
    const platform = "linux/amd64";
    // A first build keeps the base layer's blob in the content store (it extracts it for COPY).
    await build({ context: ctx, cacheDir, platform, push: false });
    const layer = base.layers[0]!.desc;
    const cached = join(cacheDir, "content", "blobs", "sha256", hexOf(layer.digest));
    const bytes = await readFile(cached);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await writeFile(cached, bytes);

    const events: BuildEvent[] = [];
    const tag = `${target.host}/app/corrupt:v1`;
    const r = await build({ context: ctx, cacheDir, platform, tags: [tag], onEvent: (e) => events.push(e) });
    expect(r.digest).toMatch(/^sha256:/);
    // The target holds the base layer with its real bytes (getBlob verifies them).
    const pushed = await collect(await client.getBlob(parseReference(tag), layer.digest, { size: layer.size }));
    expect(pushed.equals(Buffer.from(base.layers[0]!.bytes))).toBe(true);
    // The corrupt copy is gone from the content store.
    const left = await readFile(cached).catch(() => undefined);
    expect(left === undefined || left.equals(Buffer.from(base.layers[0]!.bytes))).toBe(true);
    expect(events.some((e) => e.type === "result")).toBe(true);
  });

  it("writes an OCI layout output with the right bytes when the cached base blob is corrupt", async () => {
    const ctx = await context("corrupt-layout", `FROM ${baseReg.host}/base/img:v1\nCOPY f.txt /g.txt\n`);
    const cacheDir = join(work, "cache-corrupt-layout");
    const platform = "linux/amd64";
    await build({ context: ctx, cacheDir, platform, push: false });
    const layer = base.layers[0]!.desc;
    const cached = join(cacheDir, "content", "blobs", "sha256", hexOf(layer.digest));
    const bytes = await readFile(cached);
    bytes[10]! ^= 0x01;
    await writeFile(cached, bytes);
    const out = join(work, "layout-out");
    await build({ context: ctx, cacheDir, platform, push: false, outputs: [{ type: "oci", dest: out, tag: "v1" }] });
    expect((await readFile(join(out, "blobs", "sha256", hexOf(layer.digest)))).equals(Buffer.from(base.layers[0]!.bytes))).toBe(true);
  });

  /** `img` with its config claiming `diffId` for its layer (the same layer blob). */
  function claiming(img: TestImage, diffId: DiffID): TestImage {
    const cfg: ImageConfig = { ...img.config.parsed, rootfs: { type: "layers", diff_ids: [diffId] } };
    const config = encodeJson(MediaType.OCI_CONFIG, cfg);
    const manifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
      ...img.manifest.parsed,
      config: { mediaType: MediaType.OCI_CONFIG, digest: config.digest, size: config.bytes.length },
    });
    const blobs = new Map<Digest, Uint8Array>([...img.blobs].filter(([d]) => d !== img.config.digest));
    blobs.set(config.digest, config.bytes);
    return { layers: img.layers, config, manifest, blobs };
  }

  describe("DiffIDs", () => {
    let proxy: FaultProxy;
    let good: TestImage;
    const wrong = diffIdOf("not the layer");
    beforeAll(async () => {
      proxy = await startFaultProxy(baseReg);
      good = await imageOf("amd64", { "etc/good.txt": "a good base\n".repeat(500) });
      await pushImage(client, parseReference(`${baseReg.host}/base/good:v1`), good);
      await pushImage(client, parseReference(`${baseReg.host}/base/liar:v1`), claiming(good, wrong));
    });
    afterAll(async () => {
      await proxy?.stop();
    });

    const layerGets = (digest: string) => proxy.log.filter((r) => r.method === "GET" && r.path.endsWith(`/blobs/${digest}`)).length;

    it("refuses a base whose layer does not decompress to its DiffID, naming image and layer: exported, pushed or extracted", async () => {
      const image = `${proxy.host}/base/liar`;
      const digest = good.layers[0]!.desc.digest;
      const platform = "linux/amd64";
      const label = await context("liar-label", `FROM ${image}:v1\nLABEL x=y\n`);
      const expected = { code: "LAYER_DIFFID_MISMATCH", message: expect.stringMatching(new RegExp(`${digest}.*${image.replace(/[.]/g, "\\.")}`)) };
      const out = join(work, "liar-layout");
      await expect(build({ context: label, cacheDir: join(work, "cache-liar-1"), platform, push: false, outputs: [{ type: "oci", dest: out }] })).rejects.toMatchObject(expected);
      await expect(readFile(join(out, "index.json"))).rejects.toThrow();
      const tag = `${target.host}/app/liar:v1`;
      await expect(build({ context: label, cacheDir: join(work, "cache-liar-2"), platform, tags: [tag] })).rejects.toMatchObject(expected);
      expect(await client.headManifest(parseReference(tag))).toBeUndefined();
      const copy = await context("liar-copy", `FROM ${image}:v1\nCOPY f.txt /f.txt\n`);
      await expect(build({ context: copy, cacheDir: join(work, "cache-liar-3"), platform, push: false })).rejects.toMatchObject({
        code: "ROOTFS_DIFFID_MISMATCH",
        message: expect.stringContaining(`${digest} of ${image}`),
      });
    });

    it("checks a blob once: recorded, a later build neither decompresses it again nor, for a conflicting claim, fetches it", async () => {
      const digest = good.layers[0]!.desc.digest;
      const cacheDir = join(work, "cache-once");
      const platform = "linux/amd64";
      const ctx = await context("good-label", `FROM ${proxy.host}/base/good:v1\nLABEL x=y\n`);
      proxy.clear();
      await build({ context: ctx, cacheDir, platform, push: false, outputs: [{ type: "oci", dest: join(work, "good-1") }] });
      expect(layerGets(digest)).toBe(1);
      expect(await readFile(join(cacheDir, "diffids", hexOf(digest)), "utf8")).toBe(good.layers[0]!.diffId);
      // The same blob, claimed by another config to be something else: refused from the record alone.
      const liar = await context("liar-once", `FROM ${proxy.host}/base/liar:v1\nLABEL x=y\n`);
      proxy.clear();
      await expect(build({ context: liar, cacheDir, platform, push: false, outputs: [{ type: "oci", dest: join(work, "liar-once-out") }] })).rejects.toMatchObject({
        code: "LAYER_DIFFID_MISMATCH",
      });
      expect(layerGets(digest)).toBe(0);
    });
  });
});
