/**
 * A base image's layers are checked wherever ocibuild touches them: a cached base
 * blob that was damaged on disk is never pushed (it is dropped and fetched again
 * from the base's registry). Two real registries: the base lives on one, the
 * image is pushed to the other (so its blobs are uploaded, not mounted).
 */
import { readFile, writeFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { hexOf } from "../../src/oci/digest.js";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
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
});
