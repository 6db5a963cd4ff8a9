/**
 * Annotations written where buildx writes them, read back with skopeo (`inspect --raw`):
 * each image manifest (all platforms, or one), the index's descriptor of each image, the
 * index itself, and an OCI layout's index.json entry; and the base image's name and
 * digest that buildx adds to each manifest.
 */
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { parseAnnotation } from "../../src/oci/annotations.js";
import { ARM64_BUSYBOX, HOST_BUSYBOX, haveArm64Busybox, pushBusyboxBase } from "../../src/testing/busybox.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { parseReference } from "../../src/oci/reference.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && have("skopeo") && process.arch === "x64" && haveArm64Busybox();
const fx = useBusyboxRegistry("annot");

interface Desc {
  digest: string;
  platform: { architecture: string };
  annotations?: Record<string, string>;
}

async function raw<T>(ref: string): Promise<T> {
  return JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout) as T;
}

describe.skipIf(!ready)("annotations at every level (needs root, skopeo, amd64 with the arm64 busybox from scripts/setup.sh)", () => {
  const ref = () => `${fx.reg.host}/app/annotated:v1`;
  let base: string;
  let layout: string;

  beforeAll(async () => {
    base = `${fx.reg.host}/base/busybox:two`;
    await pushBusyboxBase({ reference: base, workDir: join(fx.work, "mbase"), cacheDir: fx.cacheDir, busyboxes: { amd64: HOST_BUSYBOX, arm64: ARM64_BUSYBOX } });
    const ctx = join(fx.work, "ctx");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nCOPY f /f\n");
    await writeFile(join(ctx, "f"), "f\n");
    layout = join(fx.work, "layout");
    const annotations = [
      "org.opencontainers.image.title=App",
      "manifest[linux/arm64]:org.example.arch=arm",
      "manifest-descriptor:org.example.desc=d",
      "index:org.opencontainers.image.description=Both",
      "index-descriptor:org.example.top=t",
    ].map(parseAnnotation);
    await build({ context: ctx, tags: [ref()], buildArgs: { BASE: base }, platform: "linux/amd64,linux/arm64", cacheDir: fx.cacheDir, annotations, outputs: [{ type: "registry" }, { type: "oci", dest: layout, tag: "v1" }] });
  }, 300_000);

  it("writes the index level on the index and the manifest-descriptor level on its entries", async () => {
    const index = await raw<{ annotations?: Record<string, string>; manifests: Desc[] }>(ref());
    expect(index.annotations).toEqual({ "org.opencontainers.image.description": "Both" });
    expect(index.manifests.map((m) => m.annotations)).toEqual([{ "org.example.desc": "d" }, { "org.example.desc": "d" }]);
  });

  it("writes the manifest level on each image, one platform's only where asked, with the base image's name and digest", async () => {
    const index = await raw<{ manifests: Desc[] }>(ref());
    const client = new RegistryClient({});
    try {
      for (const d of index.manifests) {
        const m = await raw<{ annotations: Record<string, string> }>(`${fx.reg.host}/app/annotated@${d.digest}`);
        const baseManifest = await client.getImage(parseReference(base), { platform: { os: "linux", architecture: d.platform.architecture } });
        expect(m.annotations).toEqual({
          "org.opencontainers.image.title": "App",
          ...(d.platform.architecture === "arm64" ? { "org.example.arch": "arm" } : {}),
          "org.opencontainers.image.base.name": base,
          "org.opencontainers.image.base.digest": baseManifest.manifest.digest,
        });
      }
    } finally {
      await client.close();
    }
  });

  it("writes the index-descriptor level on the OCI layout's index.json entry", async () => {
    const top = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as { manifests: Desc[] };
    expect(top.manifests[0]!.annotations).toEqual({ "org.example.top": "t", "org.opencontainers.image.ref.name": "v1" });
  });

  it("takes buildx's --annotation spelling on the CLI and refuses an unknown level", async () => {
    const r = await cli(["--no-push", "--annotation", "layer:k=v", join(fx.work, "ctx")]);
    expect([r.code, r.stderr]).toEqual([2, expect.stringContaining('"layer" is not an annotation type')]);
  });
});
