/**
 * lowerDirs on a cold base layer: one download feeds both the content store and
 * the extractor. Against a real registry: the happy path, a blob whose bytes do
 * not match its digest, and a hostile layer that fails extraction.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { digestOf, type Digest } from "../../../src/oci/digest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import { OciLayout } from "../../../src/oci/layout.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { LayerStore } from "../../../src/builder/fs/layer-store.js";
import { lowerDirs } from "../../../src/builder/fs/step-root.js";
import type { LayerRecord, StageState } from "../../../src/builder/stage-state.js";
import type { StepContext } from "../../../src/builder/step-context.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { makeLayer } from "../../../testdata/builder/fixtures.js";

describe.skipIf(!haveRegistry())("lowerDirs pulls and extracts a base layer in one pass (needs docker-registry)", () => {
  let reg: TestRegistry;
  let work: string;
  const client = new RegistryClient();

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-pull-extract-"));
  });
  afterAll(async () => {
    await client.close();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function push(repo: string, gz: Buffer): Promise<{ ref: string; digest: Digest }> {
    const ref = `${reg.host}/${repo}:v1`;
    const digest = digestOf(gz);
    await client.pushBlob(parseReference(ref), { mediaType: MediaType.OCI_LAYER_GZIP, digest, size: gz.length }, () => Readable.from([gz]));
    return { ref, digest };
  }

  async function setup(name: string, registry: Pick<RegistryClient, "getBlob"> = client, maxLayerSize?: number) {
    const dir = join(work, name);
    const content = await OciLayout.create(join(dir, "content"));
    const layerStore = new LayerStore(join(dir, "layers"));
    const logs: string[] = [];
    const ctx = {
      content,
      layerStore,
      registry,
      maxLayerSize,
      emit: (e: { message?: string }) => logs.push(e.message ?? ""),
    } as unknown as StepContext;
    return { ctx, content, layerStore, logs };
  }

  function stateOf(layer: LayerRecord): StageState {
    return { platform: { os: "linux", architecture: "amd64" }, config: {}, layers: [layer], history: [], args: {}, baseName: "test" };
  }

  it("stores the verified blob and the extracted layer from one download", async () => {
    const { gz, diffId } = await makeLayer([
      { name: "etc/", type: "directory" },
      { name: "etc/hello", content: "hello from the base\n", mode: 0o640 },
      { name: "bin/", type: "directory" },
      { name: "bin/sh", type: "symlink", linkname: "busybox" },
    ]);
    const { ref, digest } = await push("base/one", gz);
    const { ctx, content, layerStore } = await setup("one");
    const layer: LayerRecord = { descriptor: { mediaType: MediaType.OCI_LAYER_GZIP, digest, size: gz.length }, diffId, source: { kind: "registry", ref } };
    const [dir] = await lowerDirs(stateOf(layer), ctx);
    expect(dir).toBe(layerStore.layerDir(diffId));
    expect(await readFile(join(dir!, "etc/hello"), "utf8")).toBe("hello from the base\n");
    expect(await content.hasBlob(digest)).toBe(true);
    expect(Buffer.compare(await readFile(content.blobPath(digest)), gz)).toBe(0);
    // Nothing left behind in the layer store's temp area.
    expect(await readdir(join(layerStore.dir, "tmp"))).toEqual([]);
    // Extracted with its blob stored: the same directory, told by blocking calls. Extracted
    // but its blob gone: asked as before, so the blob is fetched again.
    expect(layerStore.hasNow(diffId)).toBe(true);
    expect(await lowerDirs(stateOf(layer), ctx)).toEqual([dir]);
    await rm(content.blobPath(digest));
    expect(content.hasBlobNow(digest)).toBe(false);
    expect(await lowerDirs(stateOf(layer), ctx)).toEqual([dir]);
    expect(Buffer.compare(await readFile(content.blobPath(digest)), gz)).toBe(0);
  });

  it("keeps neither the blob nor the layer when the downloaded bytes are not the layer's digest", async () => {
    const good = await makeLayer([{ name: "a", content: "the real layer" }]);
    const other = await makeLayer([{ name: "a", content: "something else" }]);
    const { ref, digest } = await push("base/two", good.gz);
    const pushedOther = await push("base/two", other.gz);
    // A registry that answers with another (self-consistent) blob for this digest.
    const lying = { getBlob: (r: Parameters<RegistryClient["getBlob"]>[0], _d: Digest, o?: Parameters<RegistryClient["getBlob"]>[2]) => client.getBlob(r, pushedOther.digest, { signal: o?.signal }) };
    const { ctx, content, layerStore } = await setup("two", lying);
    const layer: LayerRecord = { descriptor: { mediaType: MediaType.OCI_LAYER_GZIP, digest, size: good.gz.length }, diffId: good.diffId, source: { kind: "registry", ref } };
    const err = await lowerDirs(stateOf(layer), ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OcibuildError);
    expect(["DIGEST_MISMATCH", "ROOTFS_DIFFID_MISMATCH"]).toContain((err as OcibuildError).code);
    expect(await content.hasBlob(digest)).toBe(false);
    expect(await layerStore.has(good.diffId)).toBe(false);
    expect(await readdir(join(layerStore.dir, "tmp"))).toEqual([]);
  });

  it("reports a hostile layer's own error and does not hang the store side", async () => {
    const bad = await makeLayer([
      { name: "x/", type: "directory" },
      { name: "x/../../escape", content: "nope" },
      ...Array.from({ length: 200 }, (_, i) => ({ name: `x/f${i}`, content: "y".repeat(4096 + i) })),
    ]);
    const { ref, digest } = await push("base/three", bad.gz);
    const { ctx, content, layerStore } = await setup("three");
    const layer: LayerRecord = { descriptor: { mediaType: MediaType.OCI_LAYER_GZIP, digest, size: bad.gz.length }, diffId: bad.diffId, source: { kind: "registry", ref } };
    const err = await lowerDirs(stateOf(layer), ctx).catch((e: unknown) => e);
    expect((err as OcibuildError).code).toBe("ROOTFS_UNSAFE_PATH");
    expect(await layerStore.has(bad.diffId)).toBe(false);
    // The blob may or may not have been stored by then (it is verified content either way).
    if (await content.hasBlob(digest)) expect(Buffer.compare(await readFile(content.blobPath(digest)), bad.gz)).toBe(0);
    expect(existsSync(join(work, "escape"))).toBe(false);
  });

  it("stops a layer that decompresses to more than maxLayerSize, naming it, whether pulled or already stored", async () => {
    // 64 MiB of zeros: a gzip blob of about 64 KiB.
    const bomb = await makeLayer([{ name: "zeros", content: "\0".repeat(64 * 1024 * 1024) }]);
    expect(bomb.gz.length).toBeLessThan(1024 * 1024);
    const { ref, digest } = await push("base/bomb", bomb.gz);
    const layer: LayerRecord = { descriptor: { mediaType: MediaType.OCI_LAYER_GZIP, digest, size: bomb.gz.length }, diffId: bomb.diffId, source: { kind: "registry", ref } };
    const cold = await setup("bomb-cold", client, 8 * 1024 * 1024);
    await expect(lowerDirs(stateOf(layer), cold.ctx)).rejects.toMatchObject({ code: "LAYER_TOO_LARGE", message: expect.stringContaining(digest) });
    expect(await cold.layerStore.has(bomb.diffId)).toBe(false);
    // The blob in the content store already: extracted from there, with the same limit.
    const stored = await setup("bomb-stored", client, 8 * 1024 * 1024);
    await stored.content.writeBlob(bomb.gz, { digest, size: bomb.gz.length });
    await expect(lowerDirs(stateOf(layer), stored.ctx)).rejects.toMatchObject({ code: "LAYER_TOO_LARGE", message: expect.stringContaining(digest) });
    expect(await readdir(join(stored.layerStore.dir, "tmp"))).toEqual([]);
    // Under the limit it is an ordinary layer.
    const roomy = await setup("bomb-roomy", client, 65 * 1024 * 1024);
    const [dir] = await lowerDirs(stateOf(layer), roomy.ctx);
    expect(dir).toBe(roomy.layerStore.layerDir(bomb.diffId));
  });
});
