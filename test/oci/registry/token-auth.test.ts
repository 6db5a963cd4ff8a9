import { mkdir, mkdtemp, rm, writeFile, chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../../src/cli/main.js";
import type { OcibuildError } from "../../../src/errors.js";
import { copyImage } from "../../../src/oci/copy.js";
import { digestOf } from "../../../src/oci/digest.js";
import { parseReference } from "../../../src/oci/reference.js";
import { RegistryClient } from "../../../src/oci/registry/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../../helpers/registry.js";
import { haveOpenssl, makeSelfSigned, writeDockerConfig } from "../../helpers/registry-tls.js";
import { startTokenServer, type TokenServer } from "../../helpers/token-server.js";
import { captureIO } from "./cli-io.js";
import { collect, imageOf, indexOf, pushImage } from "./images.js";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
const USER = "builder";
const PASSWORD = "t0ken-Pa55-qwerty";
const REFRESH = "refresh-abc-123-secret";

describe.skipIf(!haveRegistry() || !haveOpenssl())("token auth with Distribution's auth: token and an in-process token server (needs docker-registry, openssl)", () => {
  let dir: string;
  let ts: TokenServer;
  let reg: TestRegistry;
  let cfgDir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-token-"));
    const signer = await makeSelfSigned(dir, "token-signer");
    ts = await startTokenServer({
      certPath: signer.cert,
      keyPath: signer.key,
      issuer: "ocibuild-test-issuer",
      service: "ocibuild-test-registry",
      users: { [USER]: PASSWORD },
      refreshTokens: { [REFRESH]: USER },
      anonymousPull: ["public/app"],
    });
    reg = await startRegistry({ extraConfig: ts.registryConfig() });
    cfgDir = join(dir, "docker");
    await mkdir(cfgDir);
    await writeDockerConfig(cfgDir, { [reg.host]: { username: USER, password: PASSWORD } });
  });
  afterAll(async () => {
    await reg?.stop();
    await ts?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("pushes with a push+pull scoped token, caches it, and pulls back", async () => {
    const client = new RegistryClient({ env: { DOCKER_CONFIG: cfgDir } });
    const img = await imageOf("amd64", { "t.txt": "token\n" });
    const ref = parseReference(`${reg.host}/team/app:v1`);
    ts.requests.length = 0;
    await pushImage(client, ref, img);
    const scopes = ts.requests.map((r) => r.scopes.join(" "));
    expect(scopes).toContain("repository:team/app:pull,push");
    // One token for pull (HEAD checks) and one for push+pull, each fetched once and reused.
    expect(new Set(scopes).size).toBe(scopes.length);
    expect(ts.requests.every((r) => r.user === USER && r.service === "ocibuild-test-registry")).toBe(true);
    const image = await client.getImage(ref);
    expect(image.manifest.digest).toBe(img.manifest.digest);
    await client.close();
  });

  it("escalates the scope to pull the source repository for a cross-repository mount", async () => {
    const client = new RegistryClient({ env: { DOCKER_CONFIG: cfgDir } });
    const amd = await imageOf("amd64", { m: "amd\n" });
    const arm = await imageOf("arm64", { m: "arm\n" }, "v8");
    const src = parseReference(`${reg.host}/team/multi:v1`);
    await pushImage(client, src, amd, false);
    await pushImage(client, src, arm, false);
    const idx = indexOf([{ image: amd, arch: "amd64" }, { image: arm, arch: "arm64", variant: "v8" }]);
    await client.putManifest(src, idx);
    ts.requests.length = 0;
    const r = await copyImage(src.toString(), `${reg.host}/team/mounted:v1`, { client });
    expect(r.digest).toBe(idx.digest);
    expect(r.blobs).toEqual({ uploaded: 0, mounted: 4, exists: 0 });
    expect(ts.requests.map((x) => x.scopes.join(" "))).toContain("repository:team/mounted:pull,push repository:team/multi:pull");
    const { stdout } = await run("skopeo", ["inspect", "--raw", "--tls-verify=false", "--creds", `${USER}:${PASSWORD}`, `docker://${reg.host}/team/mounted:v1`]);
    expect(digestOf(stdout)).toBe(idx.digest);
    await client.close();
  });

  it("uses anonymous tokens where the token server allows them", async () => {
    const pusher = new RegistryClient({ env: { DOCKER_CONFIG: cfgDir } });
    const img = await imageOf("amd64", { p: "public\n" });
    await pushImage(pusher, parseReference(`${reg.host}/public/app:v1`), img);
    await pusher.close();
    const anon = new RegistryClient({ env: { HOME: dir } });
    ts.requests.length = 0;
    const m = await anon.getManifest(parseReference(`${reg.host}/public/app:v1`));
    expect(m.blob.digest).toBe(img.manifest.digest);
    expect(ts.requests.some((r) => r.user === undefined)).toBe(true);
    const err = (await anon.getManifest(parseReference(`${reg.host}/team/app:v1`)).catch((e: unknown) => e)) as OcibuildError;
    expect(err.code).toBe("REGISTRY_UNAUTHORIZED");
    expect(err.message).toContain(reg.host);
    await anon.close();
  });

  it("exchanges an identity token by POST (refresh_token grant)", async () => {
    const idDir = join(dir, "identity");
    await mkdir(idDir);
    await writeDockerConfig(idDir, { [reg.host]: { identitytoken: REFRESH } });
    const client = new RegistryClient({ env: { DOCKER_CONFIG: idDir } });
    ts.requests.length = 0;
    const m = await client.getManifest(parseReference(`${reg.host}/team/app:v1`));
    expect(m.kind).toBe("manifest");
    expect(ts.requests[0]).toMatchObject({ method: "POST", user: `refresh:${REFRESH}`, scopes: ["repository:team/app:pull"] });
    await client.close();
  });

  it("gets credentials from a credential helper (credHelpers), running docker-credential-NAME get", async () => {
    const bin = join(dir, "bin");
    await mkdir(bin);
    const helper = join(bin, "docker-credential-ocitest");
    await writeFile(
      helper,
      `#!/bin/sh\nread host\nif [ "$1" = get ] && [ "$host" = "${reg.host}" ]; then printf '{"ServerURL":"%s","Username":"${USER}","Secret":"${PASSWORD}"}' "$host"; exit 0; fi\necho "credentials not found in native keychain"; exit 1\n`,
    );
    await chmod(helper, 0o755);
    const hDir = join(dir, "helper");
    await mkdir(hDir);
    await writeFile(join(hDir, "config.json"), JSON.stringify({ credHelpers: { [reg.host]: "ocitest" } }));
    const client = new RegistryClient({ env: { DOCKER_CONFIG: hDir, PATH: `${bin}:/usr/bin:/bin` } });
    ts.requests.length = 0;
    const m = await client.getManifest(parseReference(`${reg.host}/team/app:v1`));
    expect(m.kind).toBe("manifest");
    expect(ts.requests[0]?.user).toBe(USER);
    await client.close();
  });

  it("wrong password: the token service refuses, exit status 1, registry named, nothing echoed", async () => {
    const badDir = join(dir, "bad");
    await mkdir(badDir);
    await writeDockerConfig(badDir, { [reg.host]: { username: USER, password: `nope-${PASSWORD}` } });
    const c = captureIO({ DOCKER_CONFIG: badDir });
    const code = await main(["--debug", "inspect", `${reg.host}/team/app:v1`], c.io);
    expect(code).toBe(1);
    expect(c.err()).toContain("REGISTRY_UNAUTHORIZED");
    expect(c.err()).toContain(`authentication to ${reg.host} failed`);
    expect(c.out() + c.err()).not.toContain(PASSWORD);
  });

  it("uploads a blob in chunks (PATCH with Content-Range) and reads it back", async () => {
    const pushes: number[] = [];
    const client = new RegistryClient({ env: { DOCKER_CONFIG: cfgDir }, chunkSize: 4096, onProgress: (e) => e.kind === "push" && pushes.push(e.bytes) });
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
