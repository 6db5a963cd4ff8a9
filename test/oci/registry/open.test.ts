import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { digestOf } from "../../../src/oci/digest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import { parseReference, withDigest } from "../../../src/oci/reference.js";
import { RegistryClient, type ProgressEvent, pushArtifact } from "../../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { collect, imageOf, imageValue, indexOf, pushImage } from "./images.js";
import { existsSync } from "node:fs";

const run = promisify(execFile);
const haveSkopeo = existsSync("/usr/bin/skopeo");

describe.skipIf(!haveRegistry())("registry client against an open registry (needs docker-registry)", () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  const events: ProgressEvent[] = [];
  beforeAll(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ chunkSize: 64 * 1024, onProgress: (e) => events.push(e), retry: { baseDelayMs: 10 } });
  });
  afterAll(async () => {
    await client?.close();
    await reg?.stop();
  });

  it("pushes an image over plain HTTP on loopback and pulls it back verified", async () => {
    const img = await imageOf("amd64", { hello: "hello world\n" });
    const ref = parseReference(`${reg.host}/test/hello:v1`);
    await pushImage(client, ref, img);
    const m = await client.getManifest(ref);
    expect(m.kind).toBe("manifest");
    expect(m.blob.digest).toBe(img.manifest.digest);
    expect(Buffer.from(m.blob.bytes).equals(Buffer.from(img.manifest.bytes))).toBe(true);
    const head = await client.headManifest(ref);
    expect(head).toEqual({ mediaType: MediaType.OCI_MANIFEST, digest: img.manifest.digest, size: img.manifest.bytes.length });
    expect(await client.headManifest(parseReference(`${reg.host}/test/hello:nope`))).toBeUndefined();
    const layer = img.layers[0]!;
    const got = await collect(await client.getBlob(ref, layer.desc.digest, { size: layer.desc.size }));
    expect(digestOf(got)).toBe(layer.desc.digest);
    const image = await client.getImage(ref);
    expect(image.config.digest).toBe(img.config.digest);
    expect(image.config.parsed.architecture).toBe("amd64");
    expect(image.index).toBeUndefined();
    // A second push finds every blob already there.
    events.length = 0;
    await pushImage(client, ref, img);
    expect(events.filter((e) => e.kind === "exists").length).toBe(2);
  });

  it("reports a digest the registry does not have as not found, with the registry's error list", async () => {
    const img = await imageOf("amd64", { a: "a" });
    const ref = parseReference(`${reg.host}/test/mismatch:v1`);
    await pushImage(client, ref, img);
    const other = await imageOf("amd64", { b: "b" });
    await pushImage(client, parseReference(`${reg.host}/test/mismatch:v2`), other);
    const err = await client.getManifest(withDigest(ref, digestOf("nothing"))).catch((e: unknown) => e);
    expect((err as OcibuildError).code).toBe("REGISTRY_NOT_FOUND");
    expect((err as OcibuildError).details?.status).toBe(404);
    expect(((err as OcibuildError).details?.errors as { code: string }[])[0]?.code).toBe("MANIFEST_UNKNOWN");
  });

  it("uploads a large blob in chunks and mounts it into another repository", async () => {
    const big = randomBytes(300 * 1024 + 17);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(big), size: big.length };
    const a = parseReference(`${reg.host}/test/big-a:v1`);
    const b = parseReference(`${reg.host}/test/big-b:v1`);
    events.length = 0;
    expect(await client.pushBlob(a, desc, () => Readable.from([big.subarray(0, 1000), big.subarray(1000)]))).toBe("uploaded");
    const pushes = events.filter((e) => e.kind === "push").map((e) => e.bytes);
    // 64 KiB chunks: 5 chunks of progress, the last at the full size.
    expect(pushes).toEqual([65536, 131072, 196608, 262144, big.length]);
    expect(await client.blobExists(a, desc.digest)).toBe(true);
    expect(await client.blobExists(b, desc.digest)).toBe(false);
    let opened = 0;
    expect(
      await client.pushBlob(b, desc, () => {
        opened++;
        return Readable.from([big]);
      }, { mountFrom: ["test/big-a"] }),
    ).toBe("mounted");
    expect(opened).toBe(0);
    expect(await client.blobExists(b, desc.digest)).toBe(true);
    const back = await collect(await client.getBlob(b, desc.digest, { size: desc.size }));
    expect(back.equals(big)).toBe(true);
  });

  it("never commits a blob whose source bytes do not match its digest", async () => {
    const good = randomBytes(1000);
    const bad = Buffer.from(good);
    bad[10] ^= 1;
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(good), size: good.length };
    const ref = parseReference(`${reg.host}/test/badsrc:v1`);
    const err = await client.pushBlob(ref, desc, () => Readable.from([bad])).catch((e: unknown) => e);
    expect((err as OcibuildError).code).toBe("DIGEST_MISMATCH");
    expect(await client.blobExists(ref, desc.digest)).toBe(false);
    // Same for a chunked upload.
    const bigGood = randomBytes(200 * 1024);
    const bigBad = Buffer.from(bigGood);
    bigBad[bigBad.length - 1] ^= 1;
    const bigDesc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(bigGood), size: bigGood.length };
    const err2 = await client.pushBlob(ref, bigDesc, () => Readable.from([bigBad])).catch((e: unknown) => e);
    expect((err2 as OcibuildError).code).toBe("DIGEST_MISMATCH");
    expect(await client.blobExists(ref, bigDesc.digest)).toBe(false);
  });

  it("picks a platform from an index, with arm64/v8 variant rules, and lists platforms when none matches", async () => {
    const amd = await imageOf("amd64", { arch: "amd64" });
    const arm = await imageOf("arm64", { arch: "arm64" }, "v8");
    const ref = parseReference(`${reg.host}/test/multi:v1`);
    await pushImage(client, ref, amd, false);
    await pushImage(client, ref, arm, false);
    const idx = indexOf([
      { image: amd, arch: "amd64" },
      { image: arm, arch: "arm64", variant: "v8" },
    ]);
    await client.putManifest(ref, idx);
    const m = await client.getManifest(ref);
    expect(m.kind).toBe("index");
    const a = await client.getImage(ref, { platform: { os: "linux", architecture: "arm64" } });
    expect(a.manifest.digest).toBe(arm.manifest.digest);
    expect(a.index?.digest).toBe(idx.digest);
    const b = await client.getImage(ref, { platform: { os: "linux", architecture: "amd64" } });
    expect(b.config.parsed.architecture).toBe("amd64");
    const err = await client.getImage(ref, { platform: { os: "linux", architecture: "s390x" } }).catch((e: unknown) => e);
    expect((err as OcibuildError).code).toBe("PLATFORM_NOT_FOUND");
    expect((err as OcibuildError).hint).toContain("linux/amd64, linux/arm64/v8");
    if (haveSkopeo) {
      const { stdout } = await run("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/test/multi:v1`]);
      expect(digestOf(stdout)).toBe(idx.digest);
    }
  });

  it("pulls docker.io images through a registry mirror", async () => {
    const img = await imageOf("amd64", { m: "from the mirror\n" });
    await pushImage(client, parseReference(`${reg.host}/library/mirrored:v1`), img);
    for (const mirror of [reg.host, `http://${reg.host}/`]) {
      const viaMirror = new RegistryClient({ registryMirrors: [mirror] });
      const ref = parseReference("mirrored:v1");
      expect(ref.toString()).toBe("docker.io/library/mirrored:v1");
      const m = await viaMirror.getManifest(ref);
      expect(m.blob.digest).toBe(img.manifest.digest);
      const layer = img.layers[0]!.desc;
      expect(digestOf(await collect(await viaMirror.getBlob(ref, layer.digest)))).toBe(layer.digest);
      await viaMirror.close();
    }
  });

  it("pushArtifact sends blobs then the manifest to several tags, mounting for the second repository", async () => {
    const img = await imageOf("amd64", { p: "push helper\n" });
    const refs = [parseReference(`${reg.host}/push/one:v1`), parseReference(`${reg.host}/push/two:v1`), parseReference(`${reg.host}/push/two:latest`)];
    const r = await pushArtifact(client, imageValue(img), refs);
    expect(r.digest).toBe(img.manifest.digest);
    expect(r.blobs).toEqual({ uploaded: 2, mounted: 2, exists: 2 });
    for (const ref of refs) expect((await client.headManifest(ref))?.digest).toBe(img.manifest.digest);
  });

  it("pushes and pulls an empty blob", async () => {
    const empty = Buffer.alloc(0);
    const desc = { mediaType: "application/octet-stream", digest: digestOf(empty), size: 0 };
    const ref = parseReference(`${reg.host}/test/empty:v1`);
    expect(await client.pushBlob(ref, desc, () => Readable.from([]))).toBe("uploaded");
    expect((await collect(await client.getBlob(ref, desc.digest, { size: 0 }))).length).toBe(0);
  });
});
