import { describe, expect, it } from "vitest";
import { annotationsAt, parseAnnotation, parseAnnotationAttribute } from "../../src/oci/annotations.js";

describe("annotations as buildx and BuildKit spell them", () => {
  it("defaults to the manifest level, and reads type lists and a platform", () => {
    expect(parseAnnotation("org.opencontainers.image.title=App")).toEqual({ levels: ["manifest"], key: "org.opencontainers.image.title", value: "App" });
    expect(parseAnnotation("index,manifest:k=v=w")).toEqual({ levels: ["index", "manifest"], key: "k", value: "v=w" });
    expect(parseAnnotation("manifest[linux/arm64]:k=v")).toEqual({ levels: ["manifest"], platform: { os: "linux", architecture: "arm64" }, key: "k", value: "v" });
    expect(parseAnnotation("manifest-descriptor:k=")).toEqual({ levels: ["manifest-descriptor"], key: "k", value: "" });
  });

  it("refuses an unknown type, a bad platform and a missing key, naming the value", () => {
    expect(() => parseAnnotation("layer:k=v")).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE", message: expect.stringContaining('"layer" is not an annotation type') }));
    expect(() => parseAnnotation("manifest[nope/x/y/z]:k=v")).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE" }));
    expect(() => parseAnnotation("=v")).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE" }));
    expect(() => parseAnnotation("novalue")).toThrow(expect.objectContaining({ code: "USAGE_BAD_VALUE" }));
  });

  it("reads BuildKit's exporter attributes and ignores other attributes", () => {
    expect(parseAnnotationAttribute("annotation.k", "v")).toEqual({ levels: ["manifest"], key: "k", value: "v" });
    expect(parseAnnotationAttribute("annotation-index.k", "v")).toEqual({ levels: ["index"], key: "k", value: "v" });
    expect(parseAnnotationAttribute("annotation-manifest-descriptor[linux/amd64].a.b", "v")).toEqual({ levels: ["manifest-descriptor"], platform: { os: "linux", architecture: "amd64" }, key: "a.b", value: "v" });
    expect(parseAnnotationAttribute("compression", "zstd")).toBeUndefined();
  });

  it("selects per level and platform, later values winning", () => {
    const all = ["a=1", "manifest[linux/arm64]:a=2", "index:b=3", "manifest,index:c=4"].map(parseAnnotation);
    expect(annotationsAt(all, "manifest", { os: "linux", architecture: "amd64" })).toEqual({ a: "1", c: "4" });
    expect(annotationsAt(all, "manifest", { os: "linux", architecture: "arm64", variant: "v8" })).toEqual({ a: "2", c: "4" });
    expect(annotationsAt(all, "index")).toEqual({ b: "3", c: "4" });
    expect(annotationsAt(all, "index-descriptor")).toBeUndefined();
  });
});
