/**
 * --platform as BuildKit and buildx read it (containerd's Parse then Normalize):
 * what TARGETPLATFORM/TARGETVARIANT/BUILDPLATFORM say, what the image config
 * and the index entries carry, and which values are usage errors. Builds FROM
 * scratch with no RUN, so no base image, emulator or sandbox is needed.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeJson, type ImageConfig, type ImageIndex, type ImageManifest } from "../../src/oci/manifest.js";
import { MediaType } from "../../src/oci/media-types.js";
import { hostPlatform, formatPlatform } from "../../src/oci/platform.js";
import { parseReference } from "../../src/oci/reference.js";
import { memoryBlob } from "../../src/oci/image.js";
import { RegistryClient, pushArtifact } from "../../src/oci/registry/index.js";
import { haveRegistry, startRegistry } from "../helpers/registry.js";
import { cli } from "../helpers/tools.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-platform-flag-"));
  await writeFile(
    join(work, "Dockerfile"),
    "FROM scratch\nARG TARGETPLATFORM TARGETOS TARGETARCH TARGETVARIANT BUILDPLATFORM\nLABEL tp=$TARGETPLATFORM ta=$TARGETARCH tv=\"$TARGETVARIANT\" bp=$BUILDPLATFORM\n",
  );
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function blob(layout: string, digest: string) {
  return JSON.parse(await readFile(join(layout, "blobs", "sha256", digest.slice("sha256:".length)), "utf8"));
}

/** Builds for `platform` into a layout; returns the labels and platform of each image, and the index entries' platforms. */
async function buildFor(platform: string, name: string) {
  const layout = join(work, name);
  const r = await cli(["--no-push", "--platform", platform, "--cache-dir", join(work, "cache"), "-o", `oci:${layout}`, work]);
  expect(r.stderr).not.toMatch(/error\[/);
  expect(r.code).toBe(0);
  const topDigest: string = JSON.parse(await readFile(join(layout, "index.json"), "utf8")).manifests[0].digest;
  const top = await blob(layout, topDigest);
  const manifests: { digest: string; platform?: object }[] = top.manifests ?? [{ digest: topDigest }];
  const images = [];
  for (const m of manifests) {
    const cfg = await blob(layout, (await blob(layout, m.digest)).config.digest);
    images.push({ labels: cfg.config.Labels, platform: { os: cfg.os, architecture: cfg.architecture, variant: cfg.variant }, entry: m.platform });
  }
  return images;
}

describe("--platform is normalised as BuildKit does", () => {
  it.each([
    ["linux/arm64", "linux/arm64", "arm64", ""],
    ["linux/arm64/v8", "linux/arm64", "arm64", ""],
    ["linux/aarch64", "linux/arm64", "arm64", ""],
    ["linux/arm", "linux/arm/v7", "arm", "v7"],
    ["linux/armhf", "linux/arm/v7", "arm", "v7"],
    ["linux/x86_64", "linux/amd64", "amd64", ""],
    ["linux/amd64/v1", "linux/amd64", "amd64", ""],
    ["linux/i386", "linux/386", "386", ""],
  ])("--platform %s: TARGETPLATFORM %s, and the config says the same", async (flag, tp, arch, variant) => {
    const [img] = await buildFor(flag, `one-${flag.replaceAll("/", "-")}`);
    expect(img!.labels).toEqual({ tp, ta: arch, tv: variant, bp: formatPlatform(hostPlatform()) });
    expect(img!.platform).toEqual({ os: "linux", architecture: arch, variant: variant === "" ? undefined : variant });
  });

  it("a two-platform build's index entries carry the normalised platforms", async () => {
    const imgs = await buildFor("linux/amd64,linux/arm64/v8", "multi");
    expect(imgs.map((i) => i.entry)).toEqual([
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
    ]);
    expect(imgs.map((i) => i.labels.tp)).toEqual(["linux/amd64", "linux/arm64"]);
  });
});

describe("a --platform that names no platform is a usage error (exit 2)", () => {
  it.each([
    ["linux/amd64,,linux/arm64", /empty item/],
    ["foo", /neither a known operating system nor a known architecture/],
    ["linux/amd46", /unknown architecture "amd46"/],
    ["linux/arm64/v8/x", /at most three parts/],
    ["linux/*", /wildcards/],
  ])("%s", async (value, why) => {
    const r = await cli(["--no-push", "--platform", value, "--cache-dir", join(work, "cache"), work]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error\[USAGE_BAD_VALUE\]: --platform /);
    expect(r.stderr).toMatch(why);
  });

  it("an OS alone is that OS on the host's architecture, an architecture alone the host's OS, as buildx reads them", async () => {
    const [os] = await buildFor("linux", "os-only");
    expect(os!.labels.tp).toBe(formatPlatform(hostPlatform()));
    const [arch] = await buildFor("arm64", "arch-only");
    expect(arch!.labels.tp).toBe("linux/arm64");
  });

  it("a bad FROM --platform names its line", async () => {
    const dir = await mkdtemp(join(work, "from-"));
    await writeFile(join(dir, "Dockerfile"), "FROM scratch\nFROM --platform=linux/amd46 scratch\n");
    const r = await cli(["--no-push", "--cache-dir", join(work, "cache"), dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[DOCKERFILE_FROM\]: .*unknown architecture "amd46"/);
    expect(r.stderr).toMatch(/ 2 \| FROM --platform=linux\/amd46 scratch/);
  });
});

describe.skipIf(!haveRegistry())("a base image whose config and index say arm64/v8 (needs docker-registry)", () => {
  it("is selected for --platform linux/arm64, and the built image says linux/arm64 without the variant, as BuildKit writes it", async () => {
    const reg = await startRegistry();
    const client = new RegistryClient({ insecureRegistries: [reg.host] });
    try {
      const base = parseReference(`${reg.host}/base/arm64v8:1`);
      const config = encodeJson<ImageConfig>(MediaType.OCI_CONFIG, { architecture: "arm64", variant: "v8", os: "linux", rootfs: { type: "layers", diff_ids: [] } } as ImageConfig);
      const manifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
        schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST, config: { mediaType: MediaType.OCI_CONFIG, digest: config.digest, size: config.bytes.length }, layers: [],
      });
      const image = { kind: "image", manifest, blobs: [memoryBlob(manifest.parsed.config, config.bytes)], config: async () => config, layers: async () => [] } as const;
      await pushArtifact(client, image, [parseReference(`${reg.host}/base/arm64v8@${manifest.digest}`)]);
      const index = encodeJson<ImageIndex>(MediaType.OCI_INDEX, {
        schemaVersion: 2, mediaType: MediaType.OCI_INDEX,
        manifests: [{ mediaType: MediaType.OCI_MANIFEST, digest: manifest.digest, size: manifest.bytes.length, platform: { os: "linux", architecture: "arm64", variant: "v8" } }],
      });
      await client.putManifest(base, index);
      const dir = await mkdtemp(join(work, "base-"));
      await writeFile(join(dir, "Dockerfile"), `FROM ${base}\nARG TARGETPLATFORM TARGETVARIANT\nLABEL tp=$TARGETPLATFORM tv="$TARGETVARIANT"\n`);
      const r = await cli(["--no-push", "--platform", "linux/arm64", "--insecure-registry", reg.host, "--cache-dir", join(work, "cache"), "-o", `oci:${join(dir, "out")}`, dir]);
      expect(r.stderr).not.toMatch(/error\[/);
      const top: string = JSON.parse(await readFile(join(dir, "out", "index.json"), "utf8")).manifests[0].digest;
      const cfg = await blob(join(dir, "out"), (await blob(join(dir, "out"), top)).config.digest);
      expect({ os: cfg.os, architecture: cfg.architecture, variant: cfg.variant }).toEqual({ os: "linux", architecture: "arm64", variant: undefined });
      expect(cfg.config.Labels).toEqual({ tp: "linux/arm64", tv: "" });
    } finally {
      await client.close();
      await reg.stop();
    }
  });
});
