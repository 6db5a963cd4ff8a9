import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatError } from "../../../src/cli/errors.js";
import { main } from "../../../src/cli/main.js";
import type { OcibuildError } from "../../../src/errors.js";
import { copyImage } from "../../../src/oci/copy.js";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { haveHtpasswd, haveOpenssl, htpasswdConfig, makeCA, makeHtpasswd, type TestCA, writeDockerConfig } from "../../helpers/registry-tls.js";
import { captureIO } from "./cli-io.js";
import { collect, imageOf, indexOf, pushImage, type TestImage } from "./images.js";

const run = promisify(execFile);
const USER = "ci-bot";
const PASSWORD = "s3cret-Pa55word-xyz";

describe.skipIf(!haveRegistry() || !haveOpenssl() || !haveHtpasswd())("TLS with a private CA plus htpasswd basic auth (needs docker-registry, openssl, htpasswd)", () => {
  let dir: string;
  let ca: TestCA;
  let reg: TestRegistry;
  let goodConfig: string;
  let badConfig: string;
  let img: TestImage;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-tls-"));
    ca = await makeCA(dir);
    const htpasswd = await makeHtpasswd(dir, { [USER]: PASSWORD });
    reg = await startRegistry({ tls: { certificate: ca.serverCert, key: ca.serverKey }, extraConfig: htpasswdConfig(htpasswd) });
    const good = join(dir, "good");
    const bad = join(dir, "bad");
    await run("mkdir", ["-p", good, bad]);
    goodConfig = await writeDockerConfig(good, { [`https://${reg.host}`]: { username: USER, password: PASSWORD } });
    badConfig = await writeDockerConfig(bad, { [reg.host]: { username: USER, password: `wrong-${PASSWORD}` } });
    img = await imageOf("amd64", { "tls.txt": "over TLS\n" });
  });
  afterAll(async () => {
    await reg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("refuses the registry's certificate without the CA, naming the way out", async () => {
    const client = new RegistryClient({ authConfigPath: goodConfig, retry: { attempts: 1 } });
    const err = (await client.ping(reg.host).catch((e: unknown) => e)) as OcibuildError;
    await client.close();
    expect(err.code).toBe("REGISTRY_TLS");
    expect(err.message).toContain(reg.host);
    // The library names its options; the CLI shows the flags.
    expect(err.hint).toContain(`the registry.registryCertificates option ("${reg.host}=/path/ca.pem")`);
    expect(err.hint).not.toContain("--");
    expect(formatError(err)).toContain(
      `hint: trust the registry's CA with --registry-certificate ${reg.host}=/path/ca.pem, or (unsafe) --skip-tls-verify-registry ${reg.host}; use --insecure-registry ${reg.host} for plain HTTP\n`,
    );
  });

  it("pushes and pulls with the CA given per registry and basic auth from config.json", async () => {
    const client = new RegistryClient({ authConfigPath: goodConfig, registryCertificates: { [reg.host]: ca.caCert }, chunkSize: 1024 });
    const ref = parseReference(`${reg.host}/secure/app:v1`);
    await pushImage(client, ref, img);
    const m = await client.getManifest(ref);
    expect(m.blob.digest).toBe(img.manifest.digest);
    const image = await client.getImage(ref);
    expect(image.config.digest).toBe(img.config.digest);
    await client.close();
  });

  it("trusts the CA from NODE_EXTRA_CA_CERTS in the injected environment, from a certs.d directory, and --skip-tls-verify-registry", async () => {
    const viaEnv = new RegistryClient({ env: { NODE_EXTRA_CA_CERTS: ca.caCert, DOCKER_CONFIG: join(dir, "good") } });
    expect((await viaEnv.getManifest(parseReference(`${reg.host}/secure/app:v1`))).blob.digest).toBe(img.manifest.digest);
    await viaEnv.close();
    // Docker's certs.d layout: DIR/HOST:PORT/ca.crt
    const certsD = join(dir, "certs.d-layout");
    await run("mkdir", ["-p", join(certsD, reg.host)]);
    await run("cp", [ca.caCert, join(certsD, reg.host, "ca.crt")]);
    const viaCertsD = new RegistryClient({ authConfigPath: goodConfig, certsDirs: [certsD] });
    expect((await viaCertsD.getManifest(parseReference(`${reg.host}/secure/app:v1`))).blob.digest).toBe(img.manifest.digest);
    await viaCertsD.close();
    const skip = new RegistryClient({ authConfigPath: goodConfig, skipTlsVerifyRegistries: [reg.host] });
    expect((await skip.getManifest(parseReference(`${reg.host}/secure/app:v1`))).blob.digest).toBe(img.manifest.digest);
    await skip.close();
  });

  it("anonymous access is refused with a clear error naming the registry", async () => {
    // HOME without a .docker/config.json: no credentials at all.
    const client = new RegistryClient({ env: { HOME: dir }, registryCertificates: { [reg.host]: ca.caCert } });
    const err = (await client.getManifest(parseReference(`${reg.host}/secure/app:v1`)).catch((e: unknown) => e)) as OcibuildError;
    await client.close();
    expect(err.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(err.message).toContain(`registry ${reg.host} requires a user name and password`);
    // An explicit credentials file that does not exist is an error of its own.
    const missing = new RegistryClient({ authConfigPath: join(dir, "none.json"), registryCertificates: { [reg.host]: ca.caCert } });
    const err2 = (await missing.getManifest(parseReference(`${reg.host}/secure/app:v1`)).catch((e: unknown) => e)) as OcibuildError;
    await missing.close();
    expect(err2.code).toBe("AUTH_CONFIG_UNREADABLE");
  });

  it("wrong credentials: exit status 1, the registry named, the password never echoed", async () => {
    const c = captureIO({ DOCKER_CONFIG: join(dir, "bad") });
    const code = await main(["inspect", "--registry-certificate", `${reg.host}=${ca.caCert}`, `${reg.host}/secure/app:v1`], c.io);
    expect(code).toBe(1);
    const all = c.out() + c.err();
    expect(c.err()).toContain("REGISTRY_UNAUTHORIZED");
    expect(c.err()).toContain(reg.host);
    expect(all).not.toContain(PASSWORD);
    expect(all).not.toContain(Buffer.from(`${USER}:wrong-${PASSWORD}`).toString("base64"));
    // And with --debug (stack and causes shown) still nothing secret.
    const d = captureIO({ DOCKER_CONFIG: join(dir, "bad") });
    expect(await main(["--debug", "copy", "--registry-certificate", `${reg.host}=${ca.caCert}`, `${reg.host}/secure/app:v1`, `${reg.host}/secure/copy:v1`], d.io)).toBe(1);
    expect(d.out() + d.err()).not.toContain(PASSWORD);
    expect(d.err()).toContain(reg.host);
  });

  it("copies a two-platform index over TLS with auth, digests preserved (checked by skopeo with the CA)", async () => {
    const client = new RegistryClient({ authConfigPath: goodConfig, registryCertificates: { [reg.host]: ca.caCert } });
    const arm = await imageOf("arm64", { "tls.txt": "arm over TLS\n" }, "v8");
    const src = parseReference(`${reg.host}/secure/multi:v1`);
    await pushImage(client, src, img, false);
    await pushImage(client, src, arm, false);
    const idx = indexOf([{ image: img, arch: "amd64" }, { image: arm, arch: "arm64", variant: "v8" }]);
    await client.putManifest(src, idx);
    const r = await copyImage(src.toString(), `${reg.host}/secure/multi-copy:v1`, { client });
    expect(r.digest).toBe(idx.digest);
    expect(r.blobs.mounted).toBe(4);
    await client.close();
    const certDir = join(dir, "certs.d");
    await run("mkdir", ["-p", certDir]);
    await run("cp", [ca.caCert, join(certDir, "ca.crt")]);
    const { stdout } = await run("skopeo", ["inspect", "--raw", "--cert-dir", certDir, "--creds", `${USER}:${PASSWORD}`, `docker://${reg.host}/secure/multi-copy:v1`]);
    expect(digestOf(stdout)).toBe(idx.digest);
  });

  it("uploads a blob in chunks (PATCH with Content-Range) and reads it back", async () => {
    const pushes: number[] = [];
    const client = new RegistryClient({ authConfigPath: goodConfig, registryCertificates: { [reg.host]: ca.caCert }, chunkSize: 4096, onProgress: (e) => e.kind === "push" && pushes.push(e.bytes) });
    const data = randomBytes(10_000);
    const desc = { mediaType: "application/octet-stream", digest: digestOf(data), size: data.length };
    const ref = parseReference(`${reg.host}/chunks/blob:v1`);
    expect(await client.pushBlob(ref, desc, () => Readable.from([data]))).toBe("uploaded");
    expect(pushes).toEqual([4096, 8192, 10_000]);
    const back = await collect(await client.getBlob(ref, desc.digest, { size: desc.size }));
    expect(back.equals(data)).toBe(true);
    await client.close();
  });
});
