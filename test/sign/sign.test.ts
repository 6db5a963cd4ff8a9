/**
 * cosign's key-based signatures, written by ocibuild and checked with openssl (the
 * signature over the payload, and the payload naming the pushed digest), and read
 * back by `verifyImage`, which refuses a wrong key, a signature moved to another
 * digest, and an image replaced under its tag.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, scryptSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { xsalsa20poly1305 } from "@noble/ciphers/salsa.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RegistryClient } from "../../src/oci/registry/index.js";
import { parseReference, withTag } from "../../src/oci/reference.js";
import { OcibuildError } from "../../src/errors.js";
import { loadPublicKey, loadSigningKey, type SigningKey } from "../../src/sign/keys.js";
import { signManifest } from "../../src/sign/attach.js";
import { verifyImage } from "../../src/sign/verify.js";
import { SIGNATURE_ANNOTATION, pae } from "../../src/sign/cosign.js";
import { build } from "../../src/api.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";

const fx = useBusyboxRegistry("sign");
const openssl = (...args: string[]) => execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "resolved",
    (e: unknown) => (e instanceof OcibuildError ? e.code : `not coded: ${String(e)}`),
  );
}

/** A cosign-format encrypted key: scrypt over the password, NaCl secretbox over the PKCS#8 DER. */
function cosignEncrypted(pkcs8Pem: string, password: string, label = "ENCRYPTED SIGSTORE PRIVATE KEY"): string {
  const der = Buffer.from(pkcs8Pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s/g, ""), "base64");
  const salt = randomBytes(32);
  const nonce = randomBytes(24);
  const key = scryptSync(password, salt, 32, { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
  const doc = {
    kdf: { name: "scrypt", params: { N: 1 << 15, r: 8, p: 1 }, salt: salt.toString("base64") },
    cipher: { name: "nacl/secretbox", nonce: nonce.toString("base64") },
    ciphertext: Buffer.from(xsalsa20poly1305(key, nonce).encrypt(der)).toString("base64"),
  };
  const b64 = Buffer.from(JSON.stringify(doc)).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

let keys: { sec1: string; pkcs8: string; pub: string; otherPub: string; rsa: string };
let client: RegistryClient;
let signingKey: SigningKey;
let imageRef: string;

beforeAll(async () => {
  const k = (name: string) => join(fx.work, name);
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", k("sec1.pem"));
  openssl("pkcs8", "-topk8", "-nocrypt", "-in", k("sec1.pem"), "-out", k("pkcs8.pem"));
  openssl("ec", "-in", k("sec1.pem"), "-pubout", "-out", k("pub.pem"));
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", k("other.pem"));
  openssl("ec", "-in", k("other.pem"), "-pubout", "-out", k("other.pub"));
  openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k("rsa.pem"));
  const read = (n: string) => readFileSync(k(n), "utf8");
  keys = { sec1: read("sec1.pem"), pkcs8: read("pkcs8.pem"), pub: read("pub.pem"), otherPub: read("other.pub"), rsa: read("rsa.pem") };
  client = new RegistryClient({});
  signingKey = await loadSigningKey(keys.pkcs8, "pkcs8.pem");
  imageRef = `${fx.reg.host}/app/signed:v1`;
  const ctx = join(fx.work, "ctx");
  execFileSync("mkdir", ["-p", ctx]);
  writeFileSync(join(ctx, "Dockerfile"), `FROM ${fx.base}\nRUN echo signed > /f\n`);
  await build({ context: ctx, tags: [imageRef], cacheDir: fx.cacheDir, sourceDateEpoch: 0 });
}, 180_000);

afterAll(() => client?.close());

describe("signing keys", () => {
  it("reads SEC1 and PKCS#8 P-256 keys to the same public key", async () => {
    const a = await loadSigningKey(keys.sec1, "sec1.pem");
    const b = await loadSigningKey(keys.pkcs8, "pkcs8.pem");
    const spki = (x: SigningKey) => x.publicKey.export({ type: "spki", format: "pem" });
    expect(spki(a)).toBe(spki(b));
    expect(spki(a)).toBe(loadPublicKey(keys.pub, "pub.pem").export({ type: "spki", format: "pem" }));
  });

  it("refuses an RSA key and text that is no key, naming the source and never the key", async () => {
    const rsa = loadSigningKey(keys.rsa, "rsa.pem");
    await expect(rsa).rejects.toMatchObject({ code: "SIGN_KEY_INVALID", message: expect.stringContaining("rsa.pem") });
    const msg = await rsa.catch((e: Error) => e.message);
    expect(msg).not.toContain(keys.rsa.split("\n")[1]!.slice(0, 20));
    expect(await codeOf(loadSigningKey("hello", "x.pem"))).toBe("SIGN_KEY_INVALID");
    expect(await codeOf(loadSigningKey(keys.pub, "pub.pem"))).toBe("SIGN_KEY_INVALID");
  });

  it("decrypts cosign's encrypted key with its password, in both PEM labels", async () => {
    for (const label of ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"]) {
      const pem = cosignEncrypted(keys.pkcs8, "s3cret-pass", label);
      const k = await loadSigningKey(pem, "cosign.key", "s3cret-pass");
      expect(k.publicKey.export({ type: "spki", format: "pem" })).toBe(signingKey.publicKey.export({ type: "spki", format: "pem" }));
    }
  });

  it("asks for the password of an encrypted key and refuses a wrong one without echoing it", async () => {
    const pem = cosignEncrypted(keys.pkcs8, "s3cret-pass");
    expect(await codeOf(loadSigningKey(pem, "cosign.key"))).toBe("SIGN_KEY_PASSWORD_REQUIRED");
    const wrong = loadSigningKey(pem, "cosign.key", "not-the-pass");
    await expect(wrong).rejects.toMatchObject({ code: "SIGN_KEY_PASSWORD_WRONG" });
    expect(await wrong.catch((e: Error) => e.message)).not.toContain("not-the-pass");
  });
});

describe("cosign signatures in a registry", () => {
  it("signs the pushed digest: openssl verifies the signature and the payload names that digest", async () => {
    const ref = parseReference(imageRef);
    const digest = (await client.headManifest(ref))!.digest;
    const res = await signManifest(client, ref, digest, signingKey);
    expect(res.digest).toBe(digest);
    const sigTag = `sha256-${digest.slice(7)}.sig`;
    const raw = JSON.parse(execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${fx.reg.host}/app/signed:${sigTag}`], { encoding: "utf8" }));
    expect(raw.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(raw.layers).toHaveLength(1);
    const layer = raw.layers[0];
    expect(layer.mediaType).toBe("application/vnd.dev.cosign.simplesigning.v1+json");
    const payload = await client.getBlobBytes(withTag(ref, sigTag), layer.digest);
    const p = JSON.parse(Buffer.from(payload).toString());
    expect(p.critical).toEqual({ identity: { "docker-reference": `${fx.reg.host}/app/signed` }, image: { "docker-manifest-digest": digest }, type: "cosign container image signature" });
    writeFileSync(join(fx.work, "payload.json"), payload);
    writeFileSync(join(fx.work, "sig.der"), Buffer.from(layer.annotations[SIGNATURE_ANNOTATION], "base64"));
    writeFileSync(join(fx.work, "pub.pem"), keys.pub);
    expect(openssl("dgst", "-sha256", "-verify", join(fx.work, "pub.pem"), "-signature", join(fx.work, "sig.der"), join(fx.work, "payload.json"))).toContain("Verified OK");
    writeFileSync(join(fx.work, "other.pub"), keys.otherPub);
    expect(() => openssl("dgst", "-sha256", "-verify", join(fx.work, "other.pub"), "-signature", join(fx.work, "sig.der"), join(fx.work, "payload.json"))).toThrow();
    // Signing again with the same key adds nothing.
    const again = await signManifest(client, ref, digest, signingKey);
    expect(again.signature).toBe(res.signature);
  });

  it("attaches signed attestations as DSSE envelopes whose signature openssl verifies over DSSE's encoding", async () => {
    const ref = parseReference(imageRef);
    const digest = (await client.headManifest(ref))!.digest;
    const statement = Buffer.from(JSON.stringify({ _type: "https://in-toto.io/Statement/v0.1", predicateType: "https://example.test/p", subject: [{ name: ref.name, digest: { sha256: digest.slice(7) } }], predicate: { hello: 1 } }));
    const res = await signManifest(client, ref, digest, signingKey, { attestations: [{ predicateType: "https://example.test/p", statement }] });
    const attTag = `sha256-${digest.slice(7)}.att`;
    const raw = JSON.parse(execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${fx.reg.host}/app/signed:${attTag}`], { encoding: "utf8" }));
    expect(raw.layers.map((l: { mediaType: string; annotations: Record<string, string> }) => [l.mediaType, l.annotations.predicateType])).toEqual([["application/vnd.dsse.envelope.v1+json", "https://example.test/p"]]);
    const env = JSON.parse(Buffer.from(await client.getBlobBytes(withTag(ref, attTag), raw.layers[0].digest)).toString());
    expect(Buffer.from(env.payload, "base64").equals(statement)).toBe(true);
    writeFileSync(join(fx.work, "pae.bin"), pae(env.payloadType, statement));
    writeFileSync(join(fx.work, "att.der"), Buffer.from(env.signatures[0].sig, "base64"));
    expect(openssl("dgst", "-sha256", "-verify", join(fx.work, "pub.pem"), "-signature", join(fx.work, "att.der"), join(fx.work, "pae.bin"))).toContain("Verified OK");
    // Re-attesting the same predicate type replaces it rather than adding a second.
    const again = await signManifest(client, ref, digest, signingKey, { attestations: [{ predicateType: "https://example.test/p", statement }] });
    const raw2 = JSON.parse(execFileSync("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${fx.reg.host}/app/signed:${attTag}`], { encoding: "utf8" }));
    expect(raw2.layers).toHaveLength(1);
    expect(again.attestations).toBeDefined();
    const verified = await verifyImage(client, ref, loadPublicKey(keys.pub, "pub.pem"));
    expect(verified.manifests[0]!.statements.map((s) => [s.source, s.predicateType])).toEqual([["att", "https://example.test/p"]]);
    expect(res.attestations).toBeDefined();
  });

  it("verifies the good image and refuses a wrong key, a signature moved to another digest and a replaced image", async () => {
    const ref = parseReference(imageRef);
    const pub = loadPublicKey(keys.pub, "pub.pem");
    const ok = await verifyImage(client, ref, pub);
    expect(ok.manifests[0]!.signedReference).toBe(`${fx.reg.host}/app/signed`);
    expect(await codeOf(verifyImage(client, ref, loadPublicKey(keys.otherPub, "other.pub")))).toBe("VERIFY_SIGNATURE_INVALID");
    // Another image; its signature tag gets a copy of the first image's signature.
    const ctx = join(fx.work, "ctx2");
    execFileSync("mkdir", ["-p", ctx]);
    writeFileSync(join(ctx, "Dockerfile"), `FROM ${fx.base}\nRUN echo tampered > /f\n`);
    const other = `${fx.reg.host}/app/signed:v2`;
    await build({ context: ctx, tags: [other], cacheDir: fx.cacheDir, sourceDateEpoch: 0 });
    const d1 = (await client.headManifest(ref))!.digest;
    const d2 = (await client.headManifest(parseReference(other)))!.digest;
    execFileSync("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${fx.reg.host}/app/signed:sha256-${d1.slice(7)}.sig`, `docker://${fx.reg.host}/app/signed:sha256-${d2.slice(7)}.sig`]);
    expect(await codeOf(verifyImage(client, parseReference(other), pub))).toBe("VERIFY_DIGEST_MISMATCH");
    // The tag moved to an unsigned image: nothing signs its digest.
    execFileSync("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${fx.base}`, `docker://${imageRef}`]);
    expect(await codeOf(verifyImage(client, ref, pub))).toBe("VERIFY_NO_SIGNATURE");
  });
});
