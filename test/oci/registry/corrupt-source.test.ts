/**
 * An upload whose source turns out not to match its digest is never sent whole:
 * the last bytes are held back until the digest is checked, so even a registry
 * that does not re-hash what it receives cannot commit it. The proxy logs how
 * many body bytes each request delivered.
 */
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { type FaultProxy, startFaultProxy } from "../../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";

describe.skipIf(!haveRegistry())("uploads from a corrupt source (needs docker-registry)", () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startFaultProxy(reg);
  });
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  it.each([
    ["monolithic", 1024 * 1024],
    ["chunked", 64 * 1024],
  ])("%s: the registry never receives all of a blob whose bytes do not match its digest", async (_how, chunkSize) => {
    const good = randomBytes(300 * 1024);
    const bad = Buffer.from(good);
    bad[bad.length - 10]! ^= 0x01;
    const desc = { mediaType: "application/octet-stream", digest: digestOf(good), size: good.length };
    const client = new RegistryClient({ chunkSize, retry: { attempts: 1 } });
    const ref = parseReference(`${proxy.host}/corrupt/${_how}:v1`);
    proxy.clear();
    try {
      // Several chunks, as a file read gives them.
      const parts = Array.from({ length: Math.ceil(bad.length / 16384) }, (_, i) => bad.subarray(i * 16384, (i + 1) * 16384));
      await expect(client.pushBlob(ref, desc, () => Readable.from(parts))).rejects.toMatchObject({ code: "DIGEST_MISMATCH" });
      const uploads = proxy.log.filter((r) => (r.method === "PUT" || r.method === "PATCH") && r.contentLength! > 0);
      expect(uploads.length).toBeGreaterThan(0);
      const delivered = uploads.reduce((n, r) => n + r.bodyBytes, 0);
      expect(delivered).toBeLessThan(good.length);
      // And no request committed it (a PUT with ?digest= that got all its bytes).
      expect(proxy.log.some((r) => r.method === "PUT" && r.path.includes("digest=") && r.bodyBytes === r.contentLength && r.contentLength! > 0)).toBe(false);
      expect(await client.blobExists(parseReference(`${reg.host}/corrupt/${_how}:v1`), desc.digest)).toBe(false);
    } finally {
      await client.close();
    }
  });
});
