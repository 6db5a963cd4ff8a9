/**
 * Every body read into memory is bounded: a token service that answers an
 * endless 200 (an in-process realm, a fault no real token server produces, behind
 * a proxy that adds the Bearer challenge in front of a real registry), and a
 * config blob larger than any config.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { type FaultProxy, startFaultProxy } from "../../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";

/** A token realm answering 200 with JSON that never ends (it stops after `cap` bytes, or when the client leaves). */
async function endlessRealm(cap: number): Promise<{ url: string; host: string; sent: () => number; stop: () => Promise<void> }> {
  let sent = 0;
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write('{"token":"');
    const pump = () => {
      while (sent < cap) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end('"}');
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `http://${host}/token`,
    host,
    sent: () => sent,
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe.skipIf(!haveRegistry())("bodies read into memory are bounded (needs docker-registry)", () => {
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

  it("refuses an endless token response with a coded error naming the token host, having read about 1 MiB", async () => {
    const realm = await endlessRealm(64 * 1024 * 1024);
    proxy.add({
      path: /^\/v2\//,
      times: Infinity,
      fault: { kind: "status", status: 401, headers: { "www-authenticate": `Bearer realm="${realm.url}",service="endless"` }, body: "{}" },
    });
    const client = new RegistryClient({ retry: { attempts: 1 } });
    try {
      const err = await client.getManifest(parseReference(`${proxy.host}/a/b:v1`)).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "REGISTRY_RESPONSE_TOO_LARGE", message: expect.stringContaining(realm.host) });
      // The realm got no further than what fits in the socket buffers past the limit.
      expect(realm.sent()).toBeLessThan(32 * 1024 * 1024);
    } finally {
      proxy.clear();
      await client.close();
      await realm.stop();
    }
  });

  it("refuses to read a blob of more than 16 MiB into memory, with or without its size", async () => {
    const client = new RegistryClient();
    try {
      const ref = parseReference(`${reg.host}/big/config:v1`);
      const bytes = randomBytes(17 * 1024 * 1024);
      const digest = digestOf(bytes);
      await client.pushBlob(ref, { mediaType: "application/octet-stream", digest, size: bytes.length }, () => Readable.from([bytes]));
      await expect(client.getBlobBytes(ref, digest)).rejects.toMatchObject({ code: "BLOB_TOO_LARGE" });
      await expect(client.getBlobBytes(ref, digest, { size: bytes.length })).rejects.toMatchObject({ code: "BLOB_TOO_LARGE" });
      const small = Buffer.from('{"small":true}');
      await client.pushBlob(ref, { mediaType: "application/json", digest: digestOf(small), size: small.length }, () => Readable.from([small]));
      expect(Buffer.from(await client.getBlobBytes(ref, digestOf(small))).toString()).toBe('{"small":true}');
    } finally {
      await client.close();
    }
  });
});
