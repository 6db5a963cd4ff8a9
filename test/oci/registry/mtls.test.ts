/**
 * Mutual TLS (kaniko's --registry-client-cert): a registry that asks for a client
 * certificate answers a client that has one for its host, and refuses one without.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OcibuildError } from "../../../src/errors.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { haveOpenssl, makeCA, makeSelfSigned, type TestCA } from "../../helpers/registry-tls.js";

describe.skipIf(!haveRegistry() || !haveOpenssl())("mutual TLS with a client certificate (needs docker-registry, openssl)", () => {
  let dir: string;
  let ca: TestCA;
  let client: { cert: string; key: string };
  let reg: TestRegistry;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-mtls-"));
    ca = await makeCA(dir);
    client = await makeSelfSigned(dir, "ocibuild-client");
    reg = await startRegistry({ tls: { certificate: ca.serverCert, key: ca.serverKey, clientCAs: [client.cert] } });
  });
  afterAll(async () => {
    await reg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("answers with the client certificate given for its host", async () => {
    const c = new RegistryClient({ registryCertificates: { [reg.host]: ca.caCert }, registryClientCerts: { [reg.host]: client }, retry: { attempts: 1 } });
    await c.ping(reg.host);
    await c.close();
  });

  it("refuses a client without one, and one whose certificate is for another host", async () => {
    for (const certs of [{}, { "other.lan": client }] as Record<string, { cert: string; key: string }>[]) {
      const c = new RegistryClient({ registryCertificates: { [reg.host]: ca.caCert }, registryClientCerts: certs, retry: { attempts: 1 } });
      const err = (await c.ping(reg.host).catch((e: unknown) => e)) as OcibuildError;
      await c.close();
      expect(err.code).toMatch(/^REGISTRY_/);
    }
  });

  it("names an unreadable certificate or key file", async () => {
    const c = new RegistryClient({ registryCertificates: { [reg.host]: ca.caCert }, registryClientCerts: { [reg.host]: { cert: join(dir, "missing.pem"), key: client.key } }, retry: { attempts: 1 } });
    const err = (await c.ping(reg.host).catch((e: unknown) => e)) as OcibuildError;
    await c.close();
    expect(err.code).toBe("REGISTRY_CERTIFICATE_UNREADABLE");
    expect(err.message).toContain("missing.pem");
  });
});
