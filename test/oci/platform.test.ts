import { describe, expect, it } from "vitest";
import type { OcibuildError } from "../../src/errors.js";
import type { ImageIndex } from "../../src/oci/manifest.js";
import { formatPlatform, normalizePlatform, parsePlatform, parsePlatformList, platformMatches, selectPlatform } from "../../src/oci/platform.js";

describe("platforms", () => {
  const host = { os: "linux", architecture: "amd64" };

  // containerd's platforms.Parse then platforms.Normalize, as BuildKit and buildx apply them.
  it.each([
    ["linux/arm64/v8", "linux/arm64"],
    ["linux/arm64", "linux/arm64"],
    ["linux/aarch64", "linux/arm64"],
    ["linux/arm64/8", "linux/arm64"],
    ["linux/arm64/v8.0", "linux/arm64"],
    ["linux/arm64/9", "linux/arm64/v9"],
    ["linux/arm64/v8.2", "linux/arm64/v8.2"],
    ["linux/arm", "linux/arm/v7"],
    ["linux/arm/7", "linux/arm/v7"],
    ["linux/arm/6", "linux/arm/v6"],
    ["linux/armhf", "linux/arm/v7"],
    ["linux/armel", "linux/arm/v6"],
    ["linux/x86_64", "linux/amd64"],
    ["linux/x86-64", "linux/amd64"],
    ["linux/amd64/v1", "linux/amd64"],
    ["linux/amd64/v3", "linux/amd64/v3"],
    ["linux/i386", "linux/386"],
    ["Linux/AMD64", "linux/amd64"],
    ["arm64", "linux/arm64"],
    ["armhf", "linux/arm/v7"],
    ["linux", "linux/amd64"],
    ["macos/arm64", "darwin/arm64"],
  ])("%s is %s", (text, normal) => {
    expect(formatPlatform(parsePlatform(text, host))).toBe(normal);
  });

  it("refuses what names no platform", () => {
    for (const bad of ["", "linux/", "a/b/c/d", "linux/am d64", "foo", "linux/amd46", "plan10/amd64", "*", "linux/*"]) {
      expect(() => parsePlatform(bad, host), bad).toThrow(/invalid platform/);
    }
  });

  it("lists: normalised, duplicates dropped, local is the host, an empty item refused", () => {
    expect(parsePlatformList("linux/arm64/v8,linux/aarch64, linux/amd64,local", host).map(formatPlatform)).toEqual(["linux/arm64", "linux/amd64"]);
    expect(parsePlatformList(undefined, host)).toEqual([host]);
    expect(() => parsePlatformList("linux/amd64,,linux/arm64", host)).toThrow(/empty item/);
    expect(() => parsePlatformList("linux/amd64,", host)).toThrow(/empty item/);
  });

  it("normalises what an image config or index entry says", () => {
    expect(normalizePlatform({ os: "linux", architecture: "arm64", variant: "v8" })).toEqual({ os: "linux", architecture: "arm64" });
    expect(normalizePlatform({ os: "linux", architecture: "arm" })).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
  });

  it.each([
    ["linux/arm64", "linux/arm64/v8", true],
    ["linux/arm64/v8", "linux/arm64", true],
    ["linux/arm64/v9", "linux/arm64", false],
    ["linux/arm", "linux/arm/v7", true],
    ["linux/arm/v6", "linux/arm/v7", false],
    ["linux/amd64", "linux/amd64/v1", true],
    ["linux/amd64/v3", "linux/amd64", false],
    ["linux/x86_64", "linux/amd64", true],
    ["linux/aarch64", "linux/arm64/v8", true],
    ["windows/amd64", "linux/amd64", false],
  ])("%s matches %s: %s", (want, have, ok) => {
    expect(platformMatches(parsePlatform(want, host), parsePlatform(have, host))).toBe(ok);
  });

  it("selects from an index and lists what is there otherwise", () => {
    const d = (n: string) => `sha256:${n.repeat(64)}`;
    const index = {
      schemaVersion: 2,
      manifests: [
        { mediaType: "m", digest: d("1"), size: 1, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: "m", digest: d("2"), size: 1, platform: { os: "linux", architecture: "arm", variant: "v6" } },
        { mediaType: "m", digest: d("3"), size: 1, platform: { os: "linux", architecture: "arm", variant: "v7" } },
        { mediaType: "m", digest: d("4"), size: 1, platform: { os: "unknown", architecture: "unknown" } },
      ],
    } as unknown as ImageIndex;
    expect(selectPlatform(index, parsePlatform("linux/arm"), "img").digest).toBe(d("3"));
    expect(selectPlatform(index, parsePlatform("linux/arm/v6"), "img").digest).toBe(d("2"));
    let err: OcibuildError | undefined;
    try {
      selectPlatform(index, parsePlatform("linux/riscv64"), "img:v1");
    } catch (e) {
      err = e as OcibuildError;
    }
    expect(err?.code).toBe("PLATFORM_NOT_FOUND");
    expect(err?.message).toContain("img:v1 has no image for platform linux/riscv64");
    expect(err?.hint).toBe("available platforms: linux/amd64, linux/arm/v6, linux/arm/v7");
  });
});
