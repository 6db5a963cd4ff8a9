/**
 * The registry timeout: a registry that trickles (one byte at a time) or never
 * answers fails the request with REGISTRY_TIMEOUT naming the host, through a
 * proxy in front of a real registry; a reader or a source of ours that is slow
 * does not.
 */
import { randomBytes } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { type FaultProxy, startFaultProxy } from "../../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { collect, imageOf, pushImage, type TestImage } from "./images.js";

describe.skipIf(!haveRegistry())("registry timeout (needs docker-registry)", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let img: TestImage;
  const blob = randomBytes(8 * 1024 * 1024);
  const blobDigest = digestOf(blob);

  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg);
    img = await imageOf("amd64", { "f.txt": "slow\n" });
    const c = new RegistryClient();
    await pushImage(c, parseReference(`${reg.host}/slow/app:v1`), img);
    await c.pushBlob(parseReference(`${reg.host}/slow/app:v1`), { mediaType: "application/octet-stream", digest: blobDigest, size: blob.length }, () => Readable.from([blob]));
    await c.close();
  });
  afterEach(() => proxy.clear());
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  const viaProxy = () => parseReference(`${proxy.host}/slow/app:v1`);
  const client = (attempts = 1) => new RegistryClient({ timeoutSeconds: 1, retry: { attempts, baseDelayMs: 5, maxDelayMs: 10 } });

  it("fails a manifest that trickles one byte every 200 ms, naming the host", async () => {
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, times: Infinity, fault: { kind: "drip", everyMs: 200 } });
    const c = client();
    const started = Date.now();
    try {
      await expect(c.getManifest(viaProxy())).rejects.toMatchObject({ code: "REGISTRY_TIMEOUT", message: expect.stringContaining(proxy.host) });
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await c.close();
    }
  });

  it("fails a request that is never answered, and a blob that trickles after its retries", async () => {
    proxy.add({ method: "GET", path: /\/manifests\/v1$/, fault: { kind: "hang" } });
    const c = client(2);
    try {
      await expect(c.getManifest(viaProxy())).resolves.toMatchObject({ blob: { digest: img.manifest.digest } }); // retried once
      proxy.add({ method: "GET", path: /\/manifests\/v1$/, times: 2, fault: { kind: "hang" } });
      await expect(c.getManifest(viaProxy())).rejects.toMatchObject({ code: "REGISTRY_TIMEOUT", message: expect.stringContaining(proxy.host) });
      proxy.add({ method: "GET", path: /\/blobs\//, times: Infinity, fault: { kind: "drip", everyMs: 300 } });
      const s = await c.getBlob(viaProxy(), blobDigest, { size: blob.length });
      await expect(collect(s)).rejects.toMatchObject({ code: "REGISTRY_TIMEOUT" });
    } finally {
      await c.close();
    }
  });

  it("does not time out a blob whose reader pauses, nor an upload whose source pauses, longer than the timeout", async () => {
    const c = client();
    try {
      const s = (await c.getBlob(parseReference(`${reg.host}/slow/app:v1`), blobDigest, { size: blob.length })) as AsyncIterable<Buffer>;
      const chunks: Buffer[] = [];
      let paused = false;
      for await (const chunk of s) {
        chunks.push(chunk);
        if (!paused) {
          paused = true;
          await delay(2500);
        }
      }
      expect(Buffer.concat(chunks).equals(blob)).toBe(true);

      const up = randomBytes(3 * 1024 * 1024);
      const slowSource = async function* () {
        yield up.subarray(0, 1024 * 1024);
        await delay(2500);
        yield up.subarray(1024 * 1024);
      };
      const target = parseReference(`${reg.host}/slow/up:v1`);
      await expect(c.pushBlob(target, { mediaType: "application/octet-stream", digest: digestOf(up), size: up.length }, () => Readable.from(slowSource()))).resolves.toBe("uploaded");
    } finally {
      await c.close();
    }
  });
});
