import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../../src/cli/main.js";
import { copyImage, inspect } from "../../../src/oci/copy.js";
import { OciLayout } from "../../../src/oci/layout.js";
import { descriptorOf, encodeJson } from "../../../src/oci/manifest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { captureIO } from "./cli-io.js";
import { type TestImage, imageOf, indexOf, pushImage } from "./images.js";

const run = promisify(execFile);
const haveSkopeo = existsSync("/usr/bin/skopeo");
const haveUmoci = existsSync("/usr/bin/umoci");

async function skopeoRaw(ref: string): Promise<string> {
  const { stdout } = await run("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref}`]);
  return stdout;
}

describe.skipIf(!haveRegistry() || !haveSkopeo)("copy, pull, push, inspect between two real registries and OCI layouts (needs docker-registry, skopeo)", () => {
  let a: TestRegistry;
  let b: TestRegistry;
  let tmp: string;
  let amd: TestImage;
  let arm: TestImage;
  let indexDigest: string;
  beforeAll(async () => {
    [a, b] = await Promise.all([startRegistry(), startRegistry()]);
    tmp = await mkdtemp(join(tmpdir(), "ocibuild-copy-"));
    const client = new RegistryClient();
    amd = await imageOf("amd64", { "etc/arch": "amd64\n", "shared": "same in both\n" });
    arm = await imageOf("arm64", { "etc/arch": "arm64\n", "shared": "same in both\n" }, "v8");
    const ref = parseReference(`${a.host}/src/multi:v1`);
    await pushImage(client, ref, amd, false);
    await pushImage(client, ref, arm, false);
    const idx = indexOf([
      { image: amd, arch: "amd64" },
      { image: arm, arch: "arm64", variant: "v8" },
    ]);
    await client.putManifest(ref, idx);
    indexDigest = idx.digest;
    await client.close();
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it("copies a two-platform index to another registry with every digest preserved (checked by skopeo)", async () => {
    const c = captureIO();
    const code = await main(["copy", `${a.host}/src/multi:v1`, `${b.host}/dst/multi:v1`], c.io);
    expect(c.err()).toContain("3 manifests");
    // One line per blob moved: 2 configs and 2 layers.
    expect(c.err().match(/^sha256:[0-9a-f]{12} pushed \(\d+ bytes\)$/gm)).toHaveLength(4);
    expect(code).toBe(0);
    expect(c.out().trim()).toBe(indexDigest);
    const raw = await skopeoRaw(`${b.host}/dst/multi:v1`);
    expect(digestOf(raw)).toBe(indexDigest);
    for (const img of [amd, arm]) {
      const child = await skopeoRaw(`${b.host}/dst/multi@${img.manifest.digest}`);
      expect(digestOf(child)).toBe(img.manifest.digest);
    }
    // skopeo can read the arm64 image's config through our copy.
    const { stdout } = await run("skopeo", ["inspect", "--config", "--raw", "--tls-verify=false", "--override-arch", "arm64", `docker://${b.host}/dst/multi:v1`]);
    expect(digestOf(stdout)).toBe(arm.config.digest);
  });

  it("mounts instead of uploading within one registry", async () => {
    const r = await copyImage(`${a.host}/src/multi:v1`, `${a.host}/other/multi:v2`, {});
    expect(r.digest).toBe(indexDigest);
    // 2 configs + 2 layers, all mounted from src/multi.
    expect(r.blobs).toEqual({ uploaded: 0, mounted: 4, exists: 0 });
    expect(digestOf(await skopeoRaw(`${a.host}/other/multi:v2`))).toBe(indexDigest);
    const again = await copyImage(`${a.host}/src/multi:v1`, `${a.host}/other/multi:v2`, {});
    expect(again.blobs).toEqual({ uploaded: 0, mounted: 0, exists: 4 });
  });

  it("copies one platform with --platform (the image manifest, by the given tag)", async () => {
    const c = captureIO();
    const code = await main(["copy", "--platform", "linux/arm64", `${a.host}/src/multi:v1`, `${b.host}/dst/arm-only:v1`], c.io);
    expect(code).toBe(0);
    expect(c.out().trim()).toBe(arm.manifest.digest);
    expect(digestOf(await skopeoRaw(`${b.host}/dst/arm-only:v1`))).toBe(arm.manifest.digest);
  });

  it("pulls into an OCI layout and pushes it back unchanged; umoci can unpack it", async () => {
    const dir = join(tmp, "layout");
    const c = captureIO();
    expect(await main(["pull", `${a.host}/src/multi:v1`, "--output", `oci:${dir}`], c.io)).toBe(0);
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0]!.digest).toBe(indexDigest);
    expect(index.manifests[0]!.annotations?.["org.opencontainers.image.ref.name"]).toBe("v1");
    const blob = await readFile(join(dir, "blobs", "sha256", indexDigest.slice(7)));
    expect(digestOf(blob)).toBe(indexDigest);
    const p = captureIO();
    expect(await main(["push", `oci:${dir}:v1`, `${b.host}/pushed/multi:v3`], p.io)).toBe(0);
    expect(p.out().trim()).toBe(indexDigest);
    expect(digestOf(await skopeoRaw(`${b.host}/pushed/multi:v3`))).toBe(indexDigest);
    // inspect reads layouts too.
    const li = captureIO();
    expect(await main(["inspect", "--raw", `oci:${dir}:v1`], li.io)).toBe(0);
    expect(digestOf(li.outBytes())).toBe(indexDigest);
    if (haveUmoci) {
      // umoci wants a single image manifest: pull one platform to its own layout.
      const one = join(tmp, "one");
      await copyImage(`${a.host}/src/multi:v1`, `oci:${one}:img`, { platform: { os: "linux", architecture: "amd64" } });
      const bundle = join(tmp, "bundle");
      await run("umoci", ["unpack", "--rootless", "--image", `${one}:img`, bundle]);
      expect(await readFile(join(bundle, "rootfs", "etc", "arch"), "utf8")).toBe("amd64\n");
    }
  });

  it("inspect prints the index, the raw bytes, one platform's manifest and its config", async () => {
    const ref = `${a.host}/src/multi:v1`;
    const raw = captureIO();
    expect(await main(["inspect", "--raw", ref], raw.io)).toBe(0);
    expect(digestOf(raw.outBytes())).toBe(indexDigest);
    expect(raw.err()).toContain(indexDigest);
    const pretty = captureIO();
    expect(await main(["inspect", ref], pretty.io)).toBe(0);
    expect((JSON.parse(pretty.out()) as { manifests: unknown[] }).manifests).toHaveLength(2);
    const plat = await inspect(ref, { platform: { os: "linux", architecture: "arm64", variant: "v8" } });
    expect(plat.kind).toBe("manifest");
    expect(plat.digest).toBe(arm.manifest.digest);
    const cfg = captureIO();
    expect(await main(["inspect", "--config", "--platform", "linux/amd64", ref], cfg.io)).toBe(0);
    expect((JSON.parse(cfg.out()) as { architecture: string }).architecture).toBe("amd64");
    const none = captureIO();
    expect(await main(["inspect", "--platform", "linux/s390x", ref], none.io)).toBe(1);
    expect(none.err()).toContain("PLATFORM_NOT_FOUND");
    expect(none.err()).toContain("linux/amd64, linux/arm64/v8");
  });

  it("usage errors exit 2 and --help shows examples", async () => {
    const c = captureIO();
    expect(await main(["copy", "only-one"], c.io)).toBe(2);
    expect(c.err()).toContain("USAGE_MISSING_ARGUMENT");
    const d = captureIO();
    expect(await main(["copy", "--platform", "linux/arm64", "--all", "a", "b"], d.io)).toBe(2);
    const e = captureIO();
    expect(await main(["pull", "x/y:1"], e.io)).toBe(2);
    const f = captureIO();
    expect(await main(["copy", "--registry-certificate", "nohost", "a", "b"], f.io)).toBe(2);
    const h = captureIO();
    expect(await main(["copy", "--help"], h.io)).toBe(0);
    expect(h.out()).toContain("Examples:");
    expect(h.out()).toContain("--registry-certificate");
    const bad = captureIO();
    expect(await main(["inspect", "Not/Valid"], bad.io)).toBe(1);
    expect(bad.err()).toContain("REFERENCE_INVALID");
  });

  it("copies between layouts and leaves foreign layers where their URLs point", async () => {
    const img = await imageOf("amd64", { f: "foreign test\n" });
    const src = await OciLayout.create(join(tmp, "foreign-src"));
    for (const [d, bytes] of img.blobs) await src.writeBlob(bytes, { digest: d, size: bytes.length });
    const foreign = { mediaType: MediaType.DOCKER_FOREIGN_LAYER_GZIP, digest: digestOf("not here"), size: 8, urls: ["https://example.invalid/layer"] };
    const manifest = encodeJson(MediaType.OCI_MANIFEST, { ...img.manifest.parsed, layers: [foreign, ...img.manifest.parsed.layers] });
    await src.writeBlob(manifest.bytes, { digest: manifest.digest, size: manifest.bytes.length });
    await src.addManifest(descriptorOf(manifest), "v1");
    const r = await copyImage(`oci:${join(tmp, "foreign-src")}:v1`, `oci:${join(tmp, "foreign-dst")}:copied`, {});
    expect(r.digest).toBe(manifest.digest);
    expect(r.blobs.uploaded).toBe(2);
    const dst = await OciLayout.open(join(tmp, "foreign-dst"));
    expect((await dst.resolve("copied"))?.digest).toBe(manifest.digest);
    expect(await dst.hasBlob(foreign.digest)).toBe(false);
  });
});
