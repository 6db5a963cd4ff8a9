import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { OcibuildError } from "../../../src/errors.js";
import { copyImage } from "../../../src/oci/copy.js";
import { digestOf } from "../../../src/oci/digest.js";
import { MediaType } from "../../../src/oci/media-types.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient, type RetryEvent } from "../../../src/oci/registry/index.js";
import { type FaultProxy, startFaultProxy } from "../../helpers/fault-proxy.js";
import { pushArtifact } from "../../../src/oci/registry/push.js";
import { freePort, haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { collect, imageOf, imageValue, pushImage, type TestImage } from "./images.js";

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(dir.length + 1));
  }
  return out.sort();
}

describe.skipIf(!haveRegistry())("faults injected by a proxy in front of the real registry (needs docker-registry)", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let tmp: string;
  let img: TestImage;
  let big: Buffer;
  const retries: RetryEvent[] = [];
  const client = () => new RegistryClient({ retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 }, onRetry: (e) => retries.push(e), chunkSize: 64 * 1024 });

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg);
    tmp = await mkdtemp(join(tmpdir(), "ocibuild-faults-"));
    // A layer big enough to be cut in the middle: incompressible content.
    img = await imageOf("amd64", { "data.bin": randomBytes(200 * 1024) });
    big = randomBytes(256 * 1024 + 99);
    const c = new RegistryClient();
    await pushImage(c, parseReference(`${reg.host}/f/app:v1`), img);
    await c.close();
  });
  afterEach(() => {
    proxy.clear();
    retries.length = 0;
  });
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  const ref = () => parseReference(`${proxy.host}/f/app:v1`);
  const layer = () => img.layers[0]!.desc;

  it("retries 500 and 503 on a manifest GET, then succeeds", async () => {
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, fault: { kind: "status", status: 500 } });
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, fault: { kind: "status", status: 503 } });
    const c = client();
    const m = await c.getManifest(ref());
    await c.close();
    expect(m.blob.digest).toBe(img.manifest.digest);
    expect(proxy.log.filter((r) => r.path.endsWith("/manifests/v1")).map((r) => r.fault ?? "ok")).toEqual(["status", "status", "ok"]);
    expect(retries.map((r) => r.status)).toEqual([500, 503]);
  });

  it("honours Retry-After on 429", async () => {
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, fault: { kind: "status", status: 429, headers: { "retry-after": "1" }, body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}' } });
    const c = client();
    const m = await c.getManifest(ref());
    await c.close();
    expect(m.blob.digest).toBe(img.manifest.digest);
    expect(retries).toHaveLength(1);
    expect(retries[0]).toMatchObject({ status: 429, delayMs: 1000, reason: "HTTP 429" });
  });

  it("gives up on a registry that keeps failing, keeping the status and the registry's error list", async () => {
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, times: Infinity, fault: { kind: "status", status: 503 } });
    const c = client();
    const err = (await c.getManifest(ref()).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("REGISTRY_SERVER_ERROR");
    expect(err.retryable).toBe(true);
    expect(err.details).toMatchObject({ status: 503, registry: proxy.host, errors: [{ code: "UNAVAILABLE", message: "injected 503" }] });
    expect(proxy.log.filter((r) => r.path.endsWith("/manifests/v1"))).toHaveLength(4);
  });

  it("resumes a blob download with Range after a connection reset mid-blob", async () => {
    proxy.add({ method: "GET", path: /\/blobs\/sha256:/, fault: { kind: "reset-mid-body", afterBytes: 50_000 } });
    const c = client();
    const got = await collect(await c.getBlob(ref(), layer().digest, { size: layer().size }));
    await c.close();
    expect(digestOf(got)).toBe(layer().digest);
    const gets = proxy.log.filter((r) => r.path.includes(layer().digest));
    expect(gets).toHaveLength(2);
    expect(gets[0]!.fault).toBe("reset-mid-body");
    expect(gets[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(Number(gets[1]!.range!.slice(6, -1))).toBeGreaterThan(0);
  });

  it("follows a blob redirect to another host", async () => {
    proxy.add({ method: "GET", path: /\/blobs\/sha256:/, fault: { kind: "redirect", to: `http://localhost:${reg.port}` } });
    const c = client();
    const got = await collect(await c.getBlob(ref(), layer().digest, { size: layer().size }));
    await c.close();
    expect(digestOf(got)).toBe(layer().digest);
    expect(proxy.log.filter((r) => r.path.includes(layer().digest)).map((r) => r.fault)).toEqual(["redirect"]);
  });

  it("resumes after a truncated body", async () => {
    proxy.add({ method: "GET", path: /\/blobs\/sha256:/, fault: { kind: "truncate", afterBytes: 30_000 } });
    const c = client();
    const got = await collect(await c.getBlob(ref(), layer().digest, { size: layer().size }));
    await c.close();
    expect(digestOf(got)).toBe(layer().digest);
    expect(retries).toHaveLength(1);
  });

  it("fails cleanly when every attempt is truncated, leaving nothing half-written in the layout", async () => {
    proxy.add({ method: "GET", path: new RegExp(layer().digest), times: Infinity, fault: { kind: "truncate", afterBytes: 10_000 } });
    const dir = join(tmp, "truncated");
    const c = client();
    const err = (await copyImage(ref().toString(), `oci:${dir}:v1`, { client: c }).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("REGISTRY_UNREACHABLE");
    expect(err.message).toContain(layer().digest);
    const files = await filesUnder(dir);
    expect(files).not.toContain(`blobs/sha256/${layer().digest.slice(7)}`);
    expect(files.filter((f) => f.includes("tmp"))).toEqual([]);
    // The image was not recorded in index.json.
    expect(files.filter((f) => f.startsWith("blobs/sha256/") && f.endsWith(img.manifest.digest.slice(7)))).toEqual([]);
  });

  it("never retries a blob whose bytes do not match its digest into success", async () => {
    proxy.add({ method: "GET", path: new RegExp(layer().digest), times: Infinity, fault: { kind: "corrupt", at: 1234 } });
    const dir = join(tmp, "corrupt");
    const c = client();
    const err = (await copyImage(ref().toString(), `oci:${dir}:v1`, { client: c }).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("DIGEST_MISMATCH");
    expect(proxy.log.filter((r) => r.path.includes(layer().digest))).toHaveLength(1);
    expect(await filesUnder(dir)).not.toContain(`blobs/sha256/${layer().digest.slice(7)}`);
    expect((await filesUnder(dir)).filter((f) => f.includes("tmp"))).toEqual([]);
  });

  it("retries a manifest PUT that fails with 500", async () => {
    proxy.add({ method: "PUT", path: /\/manifests\//, fault: { kind: "status", status: 500 } });
    const c = client();
    await pushImage(c, parseReference(`${proxy.host}/f/put-retry:v1`), img);
    await c.close();
    expect(proxy.log.filter((r) => r.method === "PUT" && r.path.includes("/manifests/")).map((r) => r.fault ?? "ok")).toEqual(["status", "ok"]);
    const check = new RegistryClient();
    expect((await check.getManifest(parseReference(`${reg.host}/f/put-retry:v1`))).blob.digest).toBe(img.manifest.digest);
    await check.close();
  });

  it("restarts a monolithic upload whose PUT was cut off", async () => {
    const data = randomBytes(10_000);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(data), size: data.length };
    proxy.add({ method: "PUT", path: /\/blobs\/uploads\//, fault: { kind: "reset" } });
    const c = client();
    let opened = 0;
    const r = await c.pushBlob(parseReference(`${proxy.host}/f/mono:v1`), desc, () => {
      opened++;
      return Readable.from([data]);
    });
    await c.close();
    expect(r).toBe("uploaded");
    expect(opened).toBe(2);
    expect(proxy.log.filter((x) => x.method === "POST")).toHaveLength(2);
    const check = new RegistryClient();
    expect(digestOf(await collect(await check.getBlob(parseReference(`${reg.host}/f/mono:v1`), desc.digest)))).toBe(desc.digest);
    await check.close();
  });

  it("resumes an interrupted chunked upload from the offset the registry reports", async () => {
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(big), size: big.length };
    // The third PATCH is dropped before it reaches the registry.
    proxy.add({ method: "PATCH", path: /\/blobs\/uploads\//, skip: 2, fault: { kind: "reset" } });
    const c = client();
    const r = await c.pushBlob(parseReference(`${proxy.host}/f/chunked:v1`), desc, () => Readable.from([big]));
    await c.close();
    expect(r).toBe("uploaded");
    // One upload session; the upload status was asked; the lost chunk was sent again from its start.
    expect(proxy.log.filter((x) => x.method === "POST")).toHaveLength(1);
    expect(proxy.log.filter((x) => x.method === "GET" && x.path.includes("/blobs/uploads/"))).toHaveLength(1);
    const ranges = proxy.log.filter((x) => x.method === "PATCH").map((x) => `${x.contentRange}${x.fault ? " reset" : ""}`);
    expect(ranges).toEqual(["0-65535", "65536-131071", "131072-196607 reset", "131072-196607", "196608-262143", `262144-${big.length - 1}`]);
    const check = new RegistryClient();
    const back = await collect(await check.getBlob(parseReference(`${reg.host}/f/chunked:v1`), desc.digest, { size: desc.size }));
    await check.close();
    expect(back.equals(big)).toBe(true);
  });

  it("reads the next chunk of an upload while the previous PATCH waits for its answer", async () => {
    const chunk = 256 * 1024;
    const blob = randomBytes(4 * chunk + 99);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(blob), size: blob.length };
    // The first PATCH's answer is held until the source has given the second chunk
    // whole (more than stream buffering alone would read); a 5 s fallback ends the wait otherwise.
    let pulled = 0;
    let readTwo!: (how: string) => void;
    const secondRead = new Promise<string>((resolve) => (readTwo = resolve));
    const fallback = setTimeout(() => readTwo("timeout"), 5000);
    function* pieces() {
      for (let at = 0; at < blob.length; at += 4096) {
        pulled += Math.min(4096, blob.length - at);
        if (pulled >= 2 * chunk) readTwo("read");
        yield blob.subarray(at, at + 4096);
      }
    }
    proxy.add({ method: "PATCH", path: /\/blobs\/uploads\//, fault: { kind: "hold", until: secondRead } });
    const c = new RegistryClient({ chunkSize: chunk });
    const r = await c.pushBlob(parseReference(`${proxy.host}/f/ahead:v1`), desc, () => Readable.from(pieces()));
    await c.close();
    clearTimeout(fallback);
    expect([r, await secondRead]).toEqual(["uploaded", "read"]);
    expect(proxy.log.filter((x) => x.method === "PATCH").map((x) => x.contentRange)).toEqual(
      [0, 1, 2, 3, 4].map((i) => `${i * chunk}-${Math.min((i + 1) * chunk, blob.length) - 1}`),
    );
    const check = new RegistryClient();
    const back = await collect(await check.getBlob(parseReference(`${reg.host}/f/ahead:v1`), desc.digest, { size: desc.size }));
    await check.close();
    expect(back.equals(blob)).toBe(true);
  });

  it("retries a chunk answered with 503 from the offset the registry reports", async () => {
    const other = randomBytes(150 * 1024);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(other), size: other.length };
    proxy.add({ method: "PATCH", path: /\/blobs\/uploads\//, skip: 1, fault: { kind: "status", status: 503 } });
    const c = client();
    const r = await c.pushBlob(parseReference(`${proxy.host}/f/chunked2:v1`), desc, () => Readable.from([other]));
    await c.close();
    expect(r).toBe("uploaded");
    expect(proxy.log.filter((x) => x.method === "POST")).toHaveLength(1);
    expect(proxy.log.filter((x) => x.method === "PATCH").map((x) => x.contentRange)).toEqual(["0-65535", "65536-131071", "65536-131071", `131072-${other.length - 1}`]);
    const check = new RegistryClient();
    const back = await collect(await check.getBlob(parseReference(`${reg.host}/f/chunked2:v1`), desc.digest, { size: desc.size }));
    await check.close();
    expect(back.equals(other)).toBe(true);
  });

  it("restarts a chunked upload that the registry cannot resume after a chunk was cut in the middle", async () => {
    const other = randomBytes(150 * 1024);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(other), size: other.length };
    proxy.add({ method: "PATCH", path: /\/blobs\/uploads\//, skip: 1, fault: { kind: "reset-mid-request", afterBytes: 20_000 } });
    const c = client();
    let opened = 0;
    const r = await c.pushBlob(parseReference(`${proxy.host}/f/chunked3:v1`), desc, () => {
      opened++;
      return Readable.from([other]);
    });
    await c.close();
    expect(r).toBe("uploaded");
    // Registry 2.8 cancels an upload whose size no longer matches its state: a new session, the source read again.
    expect(opened).toBe(2);
    expect(proxy.log.filter((x) => x.method === "POST")).toHaveLength(2);
    const check = new RegistryClient();
    const back = await collect(await check.getBlob(parseReference(`${reg.host}/f/chunked3:v1`), desc.digest, { size: desc.size }));
    await check.close();
    expect(back.equals(other)).toBe(true);
  });

  it("refuses a manifest whose bytes do not match its digest, and leaves the destination registry without the image", async () => {
    proxy.add({ method: "GET", path: new RegExp(`/manifests/${img.manifest.digest}$`), times: Infinity, fault: { kind: "corrupt", at: 20 } });
    const c = client();
    const err = (await c.getManifest(parseReference(`${proxy.host}/f/app@${img.manifest.digest}`)).catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("DIGEST_MISMATCH");
    expect(err.message).toContain(img.manifest.digest);
    // By tag: the registry's Docker-Content-Digest header is checked.
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, fault: { kind: "corrupt", at: 20 } });
    const err2 = (await c.getManifest(ref()).catch((e: unknown) => e)) as OcibuildError;
    expect(err2.code).toBe("DIGEST_MISMATCH");
    // A copy whose layer arrives corrupt pushes no manifest at the destination.
    proxy.clear();
    proxy.add({ method: "GET", path: new RegExp(layer().digest), times: Infinity, fault: { kind: "corrupt", at: 5 } });
    const err3 = (await copyImage(ref().toString(), `${reg.host}/f/never:v1`, { client: c }).catch((e: unknown) => e)) as OcibuildError;
    expect(err3.code).toBe("DIGEST_MISMATCH");
    const check = new RegistryClient();
    expect(await check.headManifest(parseReference(`${reg.host}/f/never:v1`))).toBeUndefined();
    expect(await check.blobExists(parseReference(`${reg.host}/f/never:v1`), layer().digest)).toBe(false);
    await check.close();
    await c.close();
  });

  it("stops on abort with ABORTED, leaving no temp files or partial blobs in the layout", async () => {
    const dir = join(tmp, "aborted");
    const ac = new AbortController();
    const c = new RegistryClient({ onProgress: (e) => e.kind === "pull" && e.digest === layer().digest && ac.abort(new Error("test abort")) });
    const err = (await copyImage(ref().toString(), `oci:${dir}:v1`, { client: c, signal: ac.signal }).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("ABORTED");
    const files = await filesUnder(dir);
    expect(files).not.toContain(`blobs/sha256/${layer().digest.slice(7)}`);
    expect(files.filter((f) => f.includes("tmp"))).toEqual([]);
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: unknown[] };
    expect(index.manifests).toEqual([]);
  });

  it("bounds parallel blob transfers by --jobs", async () => {
    const many = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => imageOf("amd64", { [`f${i}`]: randomBytes(40_000) })));
    // One image with six layers, pushed straight to the registry.
    const layers = many.map((m) => m.layers[0]!);
    const config = many[0]!.config;
    const manifest = { schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST, config: { mediaType: MediaType.OCI_CONFIG, digest: config.digest, size: config.bytes.length }, layers: layers.map((l) => l.desc) };
    const direct = new RegistryClient();
    const src = parseReference(`${reg.host}/f/six:v1`);
    for (const l of layers) await direct.pushBlob(src, l.desc, () => Readable.from([Buffer.from(l.bytes)]));
    await direct.pushBlob(src, { mediaType: MediaType.OCI_CONFIG, digest: config.digest, size: config.bytes.length }, () => Readable.from([Buffer.from(config.bytes)]));
    const { encodeJson } = await import("../../../src/oci/manifest.js");
    await direct.putManifest(src, encodeJson(MediaType.OCI_MANIFEST, manifest));
    await direct.close();
    proxy.trackInFlight(/\/blobs\/sha256:/);
    const c = new RegistryClient({ concurrency: 2 });
    const r = await copyImage(`${proxy.host}/f/six:v1`, `oci:${join(tmp, "six")}:v1`, { client: c });
    await c.close();
    expect(r.blobs.uploaded).toBe(7);
    expect(proxy.maxInFlight()).toBeGreaterThanOrEqual(1);
    expect(proxy.maxInFlight()).toBeLessThanOrEqual(2);
  });

  it("reports a registry nobody listens on as unreachable, retryable, after retrying", async () => {
    const port = await freePort();
    const c = client();
    const err = (await c.getManifest(parseReference(`127.0.0.1:${port}/x/y:v1`)).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("REGISTRY_UNREACHABLE");
    expect(err.retryable).toBe(true);
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).toContain("ECONNREFUSED");
    expect(retries.map((r) => r.reason)).toEqual(["ECONNREFUSED", "ECONNREFUSED", "ECONNREFUSED"]);
  });

  it("honours the registry's minimum chunk size (OCI-Chunk-Min-Length)", async () => {
    const data = randomBytes(20_000);
    const desc = { mediaType: MediaType.OCI_LAYER_GZIP, digest: digestOf(data), size: data.length };
    proxy.add({ method: "POST", path: /\/blobs\/uploads\/$/, fault: { kind: "add-headers", headers: { "oci-chunk-min-length": "8192" } } });
    const c = new RegistryClient({ chunkSize: 1000 });
    expect(await c.pushBlob(parseReference(`${proxy.host}/f/minchunk:v1`), desc, () => Readable.from([data]))).toBe("uploaded");
    await c.close();
    expect(proxy.log.filter((x) => x.method === "PATCH").map((x) => x.contentRange)).toEqual(["0-8191", "8192-16383", "16384-19999"]);
  });
});

describe.skipIf(!haveRegistry())("pushing an image the repository already holds (needs docker-registry)", () => {
  it("checks the manifest once and only points the tag, or nothing when the tag names it already; a new image still has its blobs checked", async () => {
    const reg = await startRegistry();
    const proxy = await startFaultProxy(reg);
    const c = new RegistryClient();
    try {
      const img = await imageOf("amd64", { "hello.txt": "hello\n" });
      const first = await pushArtifact(c, imageValue(img), [parseReference(`${proxy.host}/p/app:v1`)]);
      expect(first.blobs.uploaded).toBe(2);
      proxy.log.length = 0;
      const outcomes: string[] = [];
      const again = await pushArtifact(c, imageValue(img), [parseReference(`${proxy.host}/p/app:v2`)], { onBlob: (_r, _d, o) => outcomes.push(o) });
      expect(again.blobs).toEqual({ uploaded: 0, mounted: 0, exists: 2 });
      expect(outcomes).toEqual(["exists", "exists"]);
      // The tag and the manifest by digest asked at once (HEADs), one PUT of the tag, nothing about blobs.
      expect(proxy.log.map((r) => `${r.method} ${r.path}`).sort()).toEqual([`HEAD /v2/p/app/manifests/${img.manifest.digest}`, "HEAD /v2/p/app/manifests/v2", "PUT /v2/p/app/manifests/v2"]);
      const tagged = await c.headManifest(parseReference(`${reg.host}/p/app:v2`));
      expect(tagged?.digest).toBe(img.manifest.digest);
      // The same push again: the tag already names the manifest, so nothing is put.
      proxy.log.length = 0;
      const unchanged = await pushArtifact(c, imageValue(img), [parseReference(`${proxy.host}/p/app:v2`)]);
      expect(unchanged).toEqual(again);
      expect(proxy.log.map((r) => `${r.method} ${r.path}`).sort()).toEqual([`HEAD /v2/p/app/manifests/${img.manifest.digest}`, "HEAD /v2/p/app/manifests/v2"]);
      // Another image in the same repository: its blobs are checked (and uploaded) as usual.
      proxy.log.length = 0;
      const other = await imageOf("amd64", { "other.txt": "other\n" });
      const third = await pushArtifact(c, imageValue(other), [parseReference(`${proxy.host}/p/app:v3`)]);
      expect(third.blobs.uploaded).toBe(2);
      expect(proxy.log.some((r) => r.method === "HEAD" && r.path.includes("/blobs/"))).toBe(true);
    } finally {
      await c.close();
      await proxy.stop();
      await reg.stop();
    }
  });
});
