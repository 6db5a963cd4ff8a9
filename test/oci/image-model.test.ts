/**
 * The image model (src/oci/image.ts) against real parts: images read from a real
 * registry through the sources, written by each sink, and read back by skopeo and
 * umoci (and by the model's own readers).
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf } from "../../src/oci/digest.js";
import { writeDockerArchive } from "../../src/oci/docker-archive.js";
import { type Image, type Index, selectImage } from "../../src/oci/image.js";
import { writeLayout } from "../../src/oci/layout-sink.js";
import { type Blob, type ImageIndex, type ImageManifest, encodeJson } from "../../src/oci/manifest.js";
import { MediaType } from "../../src/oci/media-types.js";
import { writeOciArchive } from "../../src/oci/oci-archive.js";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient, pushArtifact } from "../../src/oci/registry/index.js";
import { openLayout, openRegistry } from "../../src/oci/sources.js";
import { openRunImage } from "../../src/run/image.js";
import { type FaultProxy, startFaultProxy } from "../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, run } from "../helpers/tools.js";
import { collect, imageOf, layerOf, pushImage, type TestImage } from "./registry/images.js";

const ready = haveRegistry() && have("skopeo") && have("umoci") && have("tar");
const ARM64 = { os: "linux", architecture: "arm64" };

describe.skipIf(!ready)("the image model: sources, sinks, read back by skopeo and umoci (needs docker-registry, skopeo, umoci, tar)", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let client: RegistryClient;
  let work: string;
  let amd: TestImage;
  let arm: TestImage;
  let index: Blob<ImageIndex>;
  let artifact: Blob<ImageManifest>;
  const p = (name: string) => join(work, name);
  const src = () => parseReference(`${reg.host}/src/multi:v1`);

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg);
    client = new RegistryClient();
    work = await mkdtemp(join(tmpdir(), "ocibuild-image-model-"));
    amd = await imageOf("amd64", { "etc/arch": "amd64\n" });
    arm = await imageOf("arm64", { "etc/arch": "arm64\n" });
    for (const img of [amd, arm]) await pushImage(client, src(), img, false);
    // An attestation manifest as BuildKit writes one: platform unknown/unknown, a reference annotation, an in-toto layer.
    const statement = await layerOf({ "statement.json": "{}" });
    const attestation = await imageOf("unknown", {});
    const attManifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
      ...attestation.manifest.parsed,
      layers: [{ ...statement.desc, mediaType: "application/vnd.in-toto+json", annotations: { "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" } }],
    });
    await client.pushBlob(src(), statement.desc, async () => Readable.from([Buffer.from(statement.bytes)]));
    await client.pushBlob(src(), attestation.manifest.parsed.config, async () => Readable.from([Buffer.from(attestation.config.bytes)]));
    await client.putManifest(parseReference(`${reg.host}/src/multi@${attManifest.digest}`), attManifest);
    index = encodeJson<ImageIndex>(MediaType.OCI_INDEX, {
      schemaVersion: 2,
      mediaType: MediaType.OCI_INDEX,
      manifests: [
        { mediaType: MediaType.OCI_MANIFEST, digest: amd.manifest.digest, size: amd.manifest.bytes.length, platform: { os: "linux", architecture: "amd64" } },
        { mediaType: MediaType.OCI_MANIFEST, digest: arm.manifest.digest, size: arm.manifest.bytes.length, platform: ARM64 },
        {
          mediaType: MediaType.OCI_MANIFEST,
          digest: attManifest.digest,
          size: attManifest.bytes.length,
          platform: { os: "unknown", architecture: "unknown" },
          annotations: { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd.manifest.digest },
        },
      ],
    });
    await client.putManifest(src(), index);
    // An artifact whose config is not an image config (as the registry cache's entries are).
    const record = encodeJson("application/vnd.ocibuild.cache.record.v1+json", { key: "k", note: "not an image config" });
    artifact = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType: "application/vnd.ocibuild.cache.v1",
      config: { mediaType: record.mediaType, digest: record.digest, size: record.bytes.length },
      layers: [statement.desc],
    });
    const art = parseReference(`${reg.host}/src/artifact:v1`);
    await client.pushBlob(art, artifact.parsed.config, async () => Readable.from([Buffer.from(record.bytes)]));
    await client.pushBlob(art, statement.desc, async () => Readable.from([Buffer.from(statement.bytes)]));
    await client.putManifest(art, artifact);
  }, 60_000);
  afterAll(async () => {
    await client?.close();
    await proxy?.stop();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const skopeoDigest = async (ref: string, extra: string[] = []) => digestOf((await run("skopeo", ["inspect", "--raw", "--tls-verify=false", ...extra, ref])).stdout);

  it("reads an index lazily: every entry keeps its descriptor (attestation platform and annotations), and platform selection skips the attestation", async () => {
    const top = (await openRegistry(client, src(), "src/multi:v1")) as Index;
    expect(top.kind).toBe("index");
    expect(top.manifest.digest).toBe(index.digest);
    expect(top.entries.map((e) => e.descriptor)).toEqual(index.parsed.manifests);
    const att = await top.entries[2]!.open();
    expect(att.kind).toBe("image");
    expect((att as Image).blobs[1]!.descriptor.annotations).toEqual({ "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2" });
    const picked = await selectImage(top, ARM64, "src/multi:v1");
    expect(picked.manifest.digest).toBe(arm.manifest.digest);
    expect(picked.platform).toEqual(ARM64);
    const [layer] = await picked.layers();
    expect(layer!.diffId).toBe(arm.layers[0]!.diffId);
    expect(digestOf(await collect(await layer!.open()))).toBe(arm.layers[0]!.desc.digest);
  });

  it("the registry sink pushes an index to two repositories of the source registry: every blob mounted, every digest kept (skopeo)", async () => {
    const top = await openRegistry(client, src(), "src/multi:v1");
    const other = new RegistryClient();
    try {
      const refs = [parseReference(`${reg.host}/dst/one:v1`), parseReference(`${reg.host}/dst/two:v1`)];
      // A fresh client for the destination: blobs come from src/multi, which is on the same registry.
      const r = await pushArtifact(other, top, refs);
      // 3 configs and 3 layers (the in-toto statement among them), mounted from src/multi for both references.
      expect(r.blobs).toEqual({ uploaded: 0, mounted: 12, exists: 0 });
      expect(r.manifests).toBe(8);
      for (const ref of refs) expect(await skopeoDigest(`docker://${ref}`)).toBe(index.digest);
      expect(await skopeoDigest(`docker://${reg.host}/dst/two@${arm.manifest.digest}`)).toBe(arm.manifest.digest);
    } finally {
      await other.close();
    }
  });

  it("the oci-archive sink writes an index with its images; skopeo copies one platform out, umoci unpacks it", async () => {
    const top = await openRegistry(client, src(), "src/multi:v1");
    const file = p("multi.oci.tar");
    const desc = await writeOciArchive(file, top, { tag: "v1" });
    expect(desc.digest).toBe(index.digest);
    expect(await skopeoDigest(`oci-archive:${file}:v1`)).toBe(index.digest);
    await run("skopeo", ["copy", "--override-os", "linux", "--override-arch", "arm64", `oci-archive:${file}:v1`, `oci:${p("arm-layout")}:arm`]);
    await run("umoci", ["unpack", "--rootless", "--image", `${p("arm-layout")}:arm`, p("arm-bundle")]);
    expect(await readFile(p("arm-bundle/rootfs/etc/arch"), "utf8")).toBe("arm64\n");
  });

  it("the layout sink writes a new layout beside and renames it, then adds to it; umoci unpacks both tags", async () => {
    await mkdir(p("layouts"));
    const dir = p("layouts/images");
    const top = (await openRegistry(client, src(), "src/multi:v1")) as Index;
    const first = await writeLayout(await top.entries[0]!.open(), dir, { tag: "amd", beside: true });
    expect(first.descriptor.digest).toBe(amd.manifest.digest);
    const second = await writeLayout(await top.entries[1]!.open(), dir, { tag: "arm", beside: true });
    expect(second.blobs).toEqual({ uploaded: 2, mounted: 0, exists: 0 });
    expect(await readdir(p("layouts"))).toEqual(["images"]);
    for (const [tag, arch] of [["amd", "amd64"], ["arm", "arm64"]] as const) {
      await run("umoci", ["unpack", "--rootless", "--image", `${dir}:${tag}`, p(`bundle-${tag}`)]);
      expect(await readFile(p(`bundle-${tag}/rootfs/etc/arch`), "utf8")).toBe(`${arch}\n`);
    }
    // Read back through the layout source: the same image.
    const back = await openLayout(dir, "arm", `oci:${dir}:arm`);
    expect(back.manifest.digest).toBe(arm.manifest.digest);
  });

  it("a layout written beside that fails (a layer arrives corrupt) leaves neither the directory nor a temp sibling", async () => {
    await mkdir(p("failing"));
    proxy.add({ method: "GET", path: new RegExp(amd.layers[0]!.desc.digest), times: Infinity, fault: { kind: "corrupt", at: 5 } });
    const viaProxy = new RegistryClient({ retry: { attempts: 1 } });
    try {
      const img = await openRegistry(viaProxy, parseReference(`${proxy.host}/src/multi@${amd.manifest.digest}`), "amd");
      const err = await writeLayout(img, p("failing/out"), { tag: "v1", beside: true }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "DIGEST_MISMATCH" });
      expect(await readdir(p("failing"))).toEqual([]);
    } finally {
      proxy.clear();
      await viaProxy.close();
    }
  });

  it("an artifact whose config is not an image config is copied byte for byte by both sinks; only asking for its config fails", async () => {
    const img = (await openRegistry(client, parseReference(`${reg.host}/src/artifact:v1`), "src/artifact:v1")) as Image;
    await pushArtifact(client, img, [parseReference(`${reg.host}/dst/artifact:v1`)]);
    expect(await skopeoDigest(`docker://${reg.host}/dst/artifact:v1`)).toBe(artifact.digest);
    const r = await writeLayout(img, p("artifact-layout"), { tag: "v1" });
    expect(r.blobs.uploaded).toBe(2);
    expect(await skopeoDigest(`oci:${p("artifact-layout")}:v1`)).toBe(artifact.digest);
    await expect(img.config()).rejects.toMatchObject({ code: "MANIFEST_INVALID" });
  });

  it("the docker-archive sink writes what skopeo reads, and run's reader reads it back, each layer checked against its DiffID as it streams", async () => {
    const img = await selectImage(await openRegistry(client, src(), "src/multi:v1"), { os: "linux", architecture: "amd64" }, "src/multi:v1");
    const file = p("amd.docker.tar");
    await writeDockerArchive(file, img, { repoTags: ["example/amd:v1"] });
    const cfg = (await run("skopeo", ["inspect", "--config", "--raw", `docker-archive:${file}`])).stdout;
    expect(digestOf(cfg)).toBe(amd.config.digest);
    const opts = { cacheDir: p("run-cache"), registry: client, scratch: p("run-scratch") };
    const back = await openRunImage(`docker-archive:${file}`, opts);
    expect(back.layers.map((l) => l.diffId)).toEqual([amd.layers[0]!.diffId]);
    const tar = await collect(await back.layers[0]!.open());
    expect(`sha256:${createHash("sha256").update(tar).digest("hex")}`).toBe(amd.layers[0]!.diffId);
    // The same archive with one byte of its layer.tar changed: the layer's stream fails.
    const unpacked = p("tampered");
    await mkdir(unpacked);
    await run("tar", ["-xf", file, "-C", unpacked]);
    const member = join(unpacked, `${amd.layers[0]!.diffId.slice(7)}/layer.tar`);
    const bytes = await readFile(member);
    bytes[100]! ^= 0x01;
    await writeFile(member, bytes);
    await run("tar", ["-cf", p("tampered.tar"), "-C", unpacked, "."]);
    const bad = await openRunImage(`docker-archive:${p("tampered.tar")}`, { ...opts, scratch: p("run-scratch-2") });
    await expect(collect(await bad.layers[0]!.open())).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
  });
});
