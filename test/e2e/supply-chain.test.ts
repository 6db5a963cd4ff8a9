/**
 * Provenance, SBOM and signatures on real builds pushed to a real registry: the
 * index holds each image and its attestation manifest as BuildKit stores them
 * (read back with skopeo), the statements say what was built from what, the
 * signatures verify with openssl and name the pushed digests, and `ocibuild verify`
 * accepts the image and refuses three tampered ones.
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes, scryptSync } from "node:crypto";
import { xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build, type BuildResult } from "../../src/builder/build.js";
import { ARM64_BUSYBOX, HOST_BUSYBOX, haveArm64Busybox, pushBusyboxBase } from "../../src/testing/busybox.js";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { parseReference, withTag } from "../../src/oci/reference.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && have("bwrap") && have("skopeo") && have("openssl");
const fx = useBusyboxRegistry("supply");

interface RawIndex {
  mediaType: string;
  manifests: { mediaType: string; digest: string; platform: { os: string; architecture: string }; annotations?: Record<string, string> }[];
}

async function raw<T>(ref: string): Promise<T> {
  return JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout) as T;
}

async function statements(client: RegistryClient, repo: string, attManifest: string): Promise<Record<string, { predicateType: string; subject: { digest: { sha256: string } }[]; predicate: any }>> {
  const ref = parseReference(`${repo}@${attManifest}`);
  const m = await client.getManifest(ref);
  if (m.kind !== "manifest") throw new Error("attestation manifest is an index");
  const out: Record<string, any> = {};
  for (const l of m.blob.parsed.layers) {
    expect(l.mediaType).toBe("application/vnd.in-toto+json");
    const st = JSON.parse(Buffer.from(await client.getBlobBytes(ref, l.digest)).toString());
    expect(l.annotations?.["in-toto.io/predicate-type"]).toBe(st.predicateType);
    out[st.predicateType] = st;
  }
  return out;
}

describe.skipIf(!ready)("supply chain: provenance, SBOM and cosign signatures (needs root, bwrap, skopeo, openssl)", () => {
  let keyDir: string;
  let client: RegistryClient;
  let ctx: string;
  let single: BuildResult;
  const ref = () => `${fx.reg.host}/app/supply:v1`;

  beforeAll(async () => {
    keyDir = join(fx.work, "keys");
    await mkdir(keyDir, { recursive: true });
    execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(keyDir, "sec1.pem")]);
    execFileSync("openssl", ["pkcs8", "-topk8", "-nocrypt", "-in", join(keyDir, "sec1.pem"), "-out", join(keyDir, "cosign.key")]);
    execFileSync("openssl", ["ec", "-in", join(keyDir, "sec1.pem"), "-pubout", "-out", join(keyDir, "cosign.pub")]);
    execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", join(keyDir, "other.pem")]);
    execFileSync("openssl", ["ec", "-in", join(keyDir, "other.pem"), "-pubout", "-out", join(keyDir, "other.pub")]);
    client = new RegistryClient({});
    ctx = join(fx.work, "ctx");
    await mkdir(join(ctx, "node_modules", "left-pad"), { recursive: true });
    await writeFile(join(ctx, "node_modules", "left-pad", "package.json"), JSON.stringify({ name: "left-pad", version: "1.3.0", license: "WTFPL" }));
    await writeFile(join(ctx, "Dockerfile"), `ARG BASE\nFROM \${BASE}\nCOPY node_modules /app/node_modules\nRUN echo built > /app/built.txt\n`);
    single = await build({
      context: ctx,
      tags: [ref()],
      buildArgs: { BASE: fx.base, API_TOKEN: "sup3r-s3cret-token-value" },
      cacheDir: fx.cacheDir,
      sourceDateEpoch: 1700000000,
      attest: { provenance: { mode: "max" }, sbom: {} },
      sign: { key: join(keyDir, "cosign.key") },
    });
  }, 300_000);

  it("pushes an index with the image and its attestation manifest, laid out as BuildKit's", async () => {
    const index = await raw<RawIndex>(ref());
    expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(single.digest).toBe(single.artifact.index!.digest);
    const [image, att] = index.manifests;
    expect(index.manifests).toHaveLength(2);
    expect(image!.platform.os).toBe("linux");
    expect(att!.platform).toEqual({ architecture: "unknown", os: "unknown" });
    expect(att!.annotations).toEqual({ "vnd.docker.reference.digest": image!.digest, "vnd.docker.reference.type": "attestation-manifest" });
    expect(single.attestations).toEqual([{ platform: `${image!.platform.os}/${image!.platform.architecture}`, image: image!.digest, manifest: att!.digest, predicateTypes: ["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"] }]);
    const m = await raw<{ layers: { mediaType: string; annotations: Record<string, string> }[] }>(`${fx.reg.host}/app/supply@${att!.digest}`);
    expect(m.layers.map((l) => l.annotations["in-toto.io/predicate-type"])).toEqual(["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]);
  });

  it("records the base image by digest, the steps with their cache keys, and never a secret's value", async () => {
    const index = await raw<RawIndex>(ref());
    const st = await statements(client, `${fx.reg.host}/app/supply`, index.manifests[1]!.digest);
    const prov = st["https://slsa.dev/provenance/v1"]!;
    expect(prov.subject[0]!.digest.sha256).toBe(index.manifests[0]!.digest.slice(7));
    const baseDigest = (await client.headManifest(parseReference(fx.base)))!.digest;
    const deps = prov.predicate.buildDefinition.resolvedDependencies as { uri: string; digest: { sha256: string } }[];
    expect(deps.some((d) => d.uri.startsWith(`pkg:docker/${fx.reg.host}/base/busybox@latest?platform=`) && `sha256:${d.digest.sha256}` !== "sha256:" && d.digest.sha256.length === 64)).toBe(true);
    expect(JSON.stringify(prov)).not.toContain("sup3r-s3cret-token-value");
    expect(prov.predicate.buildDefinition.externalParameters.request.args["build-arg:API_TOKEN"]).toBe("[redacted]");
    const steps = prov.predicate.buildDefinition.internalParameters.buildConfig.steps as { instruction: string; cacheKey: string }[];
    expect(steps.map((s) => s.instruction)).toEqual(expect.arrayContaining([expect.stringContaining("COPY node_modules"), expect.stringContaining("RUN echo built")]));
    expect(steps.every((s) => /^[0-9a-f]{64}$|^sha256:/.test(s.cacheKey))).toBe(true);
    expect(prov.predicate.runDetails.metadata.startedOn).toBe("2023-11-14T22:13:20Z");
    expect(baseDigest).toMatch(/^sha256:/);
    const sbom = st["https://spdx.dev/Document"]!.predicate;
    expect(sbom.spdxVersion).toBe("SPDX-2.3");
    expect(sbom.packages.map((p: { name: string; versionInfo?: string }) => `${p.name}@${p.versionInfo}`)).toContain("left-pad@1.3.0");
  });

  it("signs the index and the image: openssl verifies the signature, whose payload names the pushed digest", async () => {
    expect(single.signatures?.map((s) => s.digest)).toEqual([single.digest, single.artifact.images[0]!.image.manifest.digest]);
    const sigRef = withTag(parseReference(ref()), `sha256-${single.digest.slice(7)}.sig`);
    const m = await client.getManifest(sigRef);
    if (m.kind !== "manifest") throw new Error("signature is an index");
    const layer = m.blob.parsed.layers[0]!;
    const payload = await client.getBlobBytes(sigRef, layer.digest);
    expect(JSON.parse(Buffer.from(payload).toString()).critical.image["docker-manifest-digest"]).toBe(single.digest);
    await writeFile(join(keyDir, "payload"), payload);
    await writeFile(join(keyDir, "sig"), Buffer.from(layer.annotations!["dev.cosignproject.cosign/signature"]!, "base64"));
    const out = execFileSync("openssl", ["dgst", "-sha256", "-verify", join(keyDir, "cosign.pub"), "-signature", join(keyDir, "sig"), join(keyDir, "payload")], { encoding: "utf8" });
    expect(out).toContain("Verified OK");
    // No key material in the result.
    expect(JSON.stringify(single)).not.toContain((await readFile(join(keyDir, "cosign.key"), "utf8")).split("\n")[1]);
  });

  it("ocibuild verify accepts the image and prints its provenance and SBOM summary", async () => {
    const r = await cli(["verify", "--key", join(keyDir, "cosign.pub"), ref()]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Verified ${ref()}@${single.digest}`);
    expect(r.stdout).toMatch(/provenance https:\/\/slsa\.dev\/provenance\/v1 \[index\]: builder https:\/\/ocibuild\.dev\/ocibuild/);
    expect(r.stdout).toMatch(/sbom SPDX-2\.3 \[att\]: \d+ package\(s\)/);
  });

  it("ocibuild verify refuses a wrong key, a signature moved to another image, and a tag moved to an unsigned image", async () => {
    const wrongKey = await cli(["verify", "--key", join(keyDir, "other.pub"), ref()]);
    expect([wrongKey.code, wrongKey.stderr]).toEqual([1, expect.stringContaining("error[VERIFY_SIGNATURE_INVALID]")]);
    // Another image, given a copy of the first one's signature.
    const other = `${fx.reg.host}/app/supply:other`;
    await writeFile(join(ctx, "Dockerfile.other"), `ARG BASE\nFROM \${BASE}\nRUN echo other > /other\n`);
    const o = await build({ context: ctx, dockerfile: join(ctx, "Dockerfile.other"), tags: [other], buildArgs: { BASE: fx.base }, cacheDir: fx.cacheDir });
    await run("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${fx.reg.host}/app/supply:sha256-${single.digest.slice(7)}.sig`, `docker://${fx.reg.host}/app/supply:sha256-${o.digest.slice(7)}.sig`]);
    const moved = await cli(["verify", "--key", join(keyDir, "cosign.pub"), other]);
    expect([moved.code, moved.stderr]).toEqual([1, expect.stringContaining("error[VERIFY_DIGEST_MISMATCH]")]);
    // The tag re-pointed at an unsigned image: its digest has no signature.
    await run("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${fx.base}`, `docker://${fx.reg.host}/app/supply:tampered`]);
    const unsigned = await cli(["verify", "--key", join(keyDir, "cosign.pub"), `${fx.reg.host}/app/supply:tampered`]);
    expect([unsigned.code, unsigned.stderr]).toEqual([1, expect.stringContaining("error[VERIFY_NO_SIGNATURE]")]);
  });

  it("a plain push stays a single manifest: no attestations unless asked", async () => {
    const plain = `${fx.reg.host}/app/plain:v1`;
    const r = await build({ context: ctx, tags: [plain], buildArgs: { BASE: fx.base }, cacheDir: fx.cacheDir });
    expect((await raw<{ mediaType: string }>(plain)).mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(r.attestations).toBeUndefined();
  });

  it("the CLI bundle signs with cosign's encrypted key (password from a file, or COSIGN_PASSWORD), and refuses a wrong password before building", async () => {
    const pkcs8 = await readFile(join(keyDir, "cosign.key"), "utf8");
    const der = Buffer.from(pkcs8.replace(/-----[A-Z ]+-----/g, "").replace(/\s/g, ""), "base64");
    const salt = randomBytes(32);
    const nonce = randomBytes(24);
    const box = xsalsa20poly1305(scryptSync("pw-123", salt, 32, { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }), nonce).encrypt(der);
    const doc = { kdf: { name: "scrypt", params: { N: 1 << 15, r: 8, p: 1 }, salt: salt.toString("base64") }, cipher: { name: "nacl/secretbox", nonce: nonce.toString("base64") }, ciphertext: Buffer.from(box).toString("base64") };
    await writeFile(join(keyDir, "enc.key"), `-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n${Buffer.from(JSON.stringify(doc)).toString("base64")}\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n`);
    await writeFile(join(keyDir, "pw"), "pw-123\n");
    const bin = join(__dirname, "../../bin/ocibuild.cjs");
    const target = `${fx.reg.host}/app/enc:v1`;
    const args = ["--progress=plain", "--cache-dir", fx.cacheDir, "--build-arg", `BASE=${fx.base}`, "-t", target, "--sign-key", join(keyDir, "enc.key")];
    const exec = (extra: string[], env: Record<string, string> = {}) => new Promise<{ code: number; stderr: string }>((res) => {
      execFile(process.execPath, [bin, ...args, ...extra, ctx], { env: { ...process.env, ...env } }, (e, _out, stderr) => res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stderr }));
    });
    const wrong = await exec([], { COSIGN_PASSWORD: "nope" });
    expect([wrong.code, wrong.stderr]).toEqual([1, expect.stringContaining("error[SIGN_KEY_PASSWORD_WRONG]")]);
    expect(wrong.stderr).not.toContain("nope");
    expect(wrong.stderr).not.toMatch(/^\[0 /m); // refused before any step
    const fromFile = await exec(["--sign-key-password-file", join(keyDir, "pw")]);
    expect(fromFile.stderr).not.toContain("error[");
    expect(fromFile.code).toBe(0);
    const fromEnv = await exec([], { COSIGN_PASSWORD: "pw-123" });
    expect(fromEnv.code).toBe(0);
    const v = await cli(["verify", "--key", join(keyDir, "cosign.pub"), target]);
    expect(v.code).toBe(0);
  });

  it("a dry run makes no attestations and signs nothing", async () => {
    await writeFile(join(ctx, "Dockerfile.dry"), `ARG BASE\nFROM ${"${BASE}"}\nRUN echo never-run > /x\n`);
    const r = await build({ context: ctx, dockerfile: join(ctx, "Dockerfile.dry"), tags: [ref()], buildArgs: { BASE: fx.base }, cacheDir: fx.cacheDir, dryRun: true, attest: { provenance: { mode: "max" }, sbom: {} }, sign: { key: join(keyDir, "cosign.key") } });
    expect([r.attestations, r.signatures]).toEqual([undefined, undefined]);
  });

  it("refuses to sign what is not pushed, before building", async () => {
    await expect(build({ context: ctx, buildArgs: { BASE: fx.base }, cacheDir: fx.cacheDir, push: false, outputs: [{ type: "oci", dest: join(fx.work, "nosign") }], sign: { key: join(keyDir, "cosign.key") } })).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });

  it("scans the stages BUILDKIT_SBOM_SCAN_STAGE marks and the context BUILDKIT_SBOM_SCAN_CONTEXT asks for, one SPDX statement each", async () => {
    await writeFile(
      join(ctx, "Dockerfile.scan"),
      `ARG BASE\nARG BUILDKIT_SBOM_SCAN_CONTEXT=true\nFROM ${"${BASE}"} AS builder\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY node_modules /build/node_modules\nFROM ${"${BASE}"}\nCOPY --from=builder /build/node_modules/left-pad/package.json /left-pad.json\n`,
    );
    const out = join(fx.work, "scan-out");
    await build({ context: ctx, dockerfile: join(ctx, "Dockerfile.scan"), buildArgs: { BASE: fx.base }, cacheDir: fx.cacheDir, push: false, attest: { sbom: {} }, outputs: [{ type: "oci", dest: out, tag: "v1" }] });
    const blob = async (d: string) => JSON.parse(await readFile(join(out, "blobs", "sha256", d.slice(7)), "utf8"));
    const index = await blob(JSON.parse(await readFile(join(out, "index.json"), "utf8")).manifests[0].digest);
    const att = await blob(index.manifests[1].digest);
    const docs = await Promise.all(att.layers.map(async (l: { digest: string }) => (await blob(l.digest)).predicate));
    const pkgs = (d: { packages: { name: string }[] }) => d.packages.map((p) => p.name);
    expect(docs.map((d: { name: string }) => d.name)).toEqual([expect.any(String), "stage builder", "context"]);
    expect(pkgs(docs[0])).not.toContain("left-pad");
    expect(pkgs(docs[1])).toContain("left-pad");
    expect(pkgs(docs[2])).toContain("left-pad");
  });

  describe.skipIf(!(process.arch === "x64" && haveArm64Busybox()))("multi-platform (needs arm64 busybox from scripts/setup.sh)", () => {
    it("attaches and signs each platform's image; verify checks the index and both images", async () => {
      const base = `${fx.reg.host}/base/busybox:multi`;
      await pushBusyboxBase({ reference: base, workDir: join(fx.work, "mbase"), cacheDir: fx.cacheDir, busyboxes: { amd64: HOST_BUSYBOX, arm64: ARM64_BUSYBOX } });
      await writeFile(join(ctx, "Dockerfile.multi"), `ARG BASE\nFROM \${BASE}\nCOPY node_modules /app/node_modules\n`);
      const multi = `${fx.reg.host}/app/multi:v1`;
      const r = await build({ context: ctx, dockerfile: join(ctx, "Dockerfile.multi"), tags: [multi], buildArgs: { BASE: base }, platform: "linux/amd64,linux/arm64", cacheDir: fx.cacheDir, attest: { provenance: { mode: "min" }, sbom: {} }, sign: { key: join(keyDir, "cosign.key") } });
      const index = await raw<RawIndex>(multi);
      expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`)).toEqual(["linux/amd64", "linux/arm64", "unknown/unknown", "unknown/unknown"]);
      expect(index.manifests[2]!.annotations!["vnd.docker.reference.digest"]).toBe(index.manifests[0]!.digest);
      expect(index.manifests[3]!.annotations!["vnd.docker.reference.digest"]).toBe(index.manifests[1]!.digest);
      expect(r.signatures!.map((s) => s.digest)).toEqual([r.digest, index.manifests[0]!.digest, index.manifests[1]!.digest]);
      const v = await cli(["verify", "--key", join(keyDir, "cosign.pub"), "--json", multi]);
      expect(v.code).toBe(0);
      const parsed = JSON.parse(v.stdout) as { manifests: { platform: string; statements: { predicateType: string }[] }[] };
      expect(parsed.manifests.map((m) => [m.platform, m.statements.map((s) => s.predicateType).sort()])).toEqual([
        ["linux/amd64", ["https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v1", "https://spdx.dev/Document", "https://spdx.dev/Document"]],
        ["linux/arm64", ["https://slsa.dev/provenance/v1", "https://slsa.dev/provenance/v1", "https://spdx.dev/Document", "https://spdx.dev/Document"]],
      ]);
    }, 300_000);
  });
});
