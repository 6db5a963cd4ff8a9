/**
 * bin/ocibuild starts Node without NODE_EXTRA_CA_CERTS (Node parses that file at
 * start-up, ~37 ms of every run) and puts it back for the command: every TLS
 * connection the command makes must still trust a CA given only there. A registry
 * (inspect, and a build's push) and an ADD of an https:// URL, each served with a
 * certificate of a private CA; and a missing CA file is an error naming it.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseReference } from "../../src/oci/reference.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { imageOf, pushImage } from "../oci/registry/images.js";
import { haveOpenssl, makeCA, type TestCA } from "../helpers/registry-tls.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";

const root = resolve(import.meta.dirname, "../..");
const bin = join(root, "bin/ocibuild");

function runBin(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) =>
    execFile(bin, args, { env: { ...process.env, NO_COLOR: "1", ...env } }, (e, stdout, stderr) => done({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );
}

describe.skipIf(!haveRegistry() || !haveOpenssl())("bin/ocibuild with a CA given only in NODE_EXTRA_CA_CERTS (needs docker-registry, openssl)", () => {
  let dir: string;
  let ca: TestCA;
  let reg: TestRegistry;
  let files: Server;
  let filesUrl: string;
  const served = "served over TLS by a private CA\n";
  beforeAll(async () => {
    if (!existsSync(join(root, "dist/ocibuild.cjs"))) throw new Error("dist/ocibuild.cjs is missing: run `npm run build`");
    dir = await mkdtemp(join(tmpdir(), "ocibuild-bin-tls-"));
    ca = await makeCA(dir);
    reg = await startRegistry({ tls: { certificate: ca.serverCert, key: ca.serverKey } });
    const client = new RegistryClient({ registryCertificates: { [reg.host]: ca.caCert } });
    await pushImage(client, parseReference(`${reg.host}/tls/app:v1`), await imageOf("amd64", { "app.txt": "app\n" }));
    await client.close();
    const [cert, key] = await Promise.all([readFile(ca.serverCert), readFile(ca.serverKey)]);
    files = createServer({ cert, key }, (req, res) => {
      if (req.url === "/moved/tool.txt") return void res.writeHead(302, { location: "/files/tool.txt" }).end();
      if (req.url !== "/files/tool.txt") return void res.writeHead(404).end();
      res.writeHead(200, { "content-type": "text/plain", "last-modified": "Tue, 01 Jun 2021 10:00:00 GMT" }).end(served);
    });
    await new Promise<void>((r) => files.listen(0, "127.0.0.1", r));
    filesUrl = `https://127.0.0.1:${(files.address() as { port: number }).port}`;
  }, 60_000);
  afterAll(async () => {
    files?.close();
    await reg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("inspects an image on a registry whose CA is only in NODE_EXTRA_CA_CERTS", async () => {
    const r = await runBin(["inspect", `${reg.host}/tls/app:v1`], { NODE_EXTRA_CA_CERTS: ca.caCert });
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ schemaVersion: 2 });
    // Without it, the same registry is refused.
    const refused = await runBin(["inspect", `${reg.host}/tls/app:v1`], {});
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("REGISTRY_TLS");
  });

  it("ADDs an https:// URL (through a redirect) signed by that CA, and pushes the image to the registry", async () => {
    const ctx = join(dir, "ctx");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM scratch\nADD ${filesUrl}/moved/tool.txt /opt/\n`);
    const layout = join(dir, "layout");
    const args = ["--cache-dir", join(dir, "cache"), "-q", "-t", `${reg.host}/tls/built:v1`, "-o", `oci:${layout}:v1`, ctx];
    const r = await runBin(args, { NODE_EXTRA_CA_CERTS: ca.caCert });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const digest = r.stdout.trim();
    const client = new RegistryClient({ registryCertificates: { [reg.host]: ca.caCert } });
    const pushed = await client.getManifest(parseReference(`${reg.host}/tls/built:v1`));
    await client.close();
    expect(pushed.blob.digest).toBe(digest);
    const blob = (d: string) => join(layout, "blobs/sha256", d.slice("sha256:".length));
    const manifest = JSON.parse(await readFile(blob(digest), "utf8")) as { layers: { digest: string }[] };
    const layer = await readFile(blob(manifest.layers[0]!.digest));
    const { gunzipSync } = await import("node:zlib");
    expect(gunzipSync(layer).toString("latin1")).toContain(served);
  }, 120_000);

  it("names the NODE_EXTRA_CA_CERTS file when it cannot be read, at the first TLS connection", async () => {
    const missing = join(dir, "no-such-ca.pem");
    const r = await runBin(["inspect", `${reg.host}/tls/app:v1`], { NODE_EXTRA_CA_CERTS: missing });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error[REGISTRY_CERTIFICATE_UNREADABLE]`);
    expect(r.stderr).toContain(missing);
    expect(r.stderr).not.toContain("extra certs"); // not Node's own start-up warning
  });
});
