/**
 * Signing keys as cosign writes them: a PEM private key (PKCS#8 `PRIVATE KEY` or
 * SEC1 `EC PRIVATE KEY`), or cosign's password-encrypted key (`ENCRYPTED SIGSTORE
 * PRIVATE KEY`, formerly `ENCRYPTED COSIGN PRIVATE KEY`): JSON holding an scrypt
 * KDF's parameters and salt, a NaCl secretbox nonce and the ciphertext of the
 * PKCS#8 DER key. Only ECDSA P-256 keys are accepted (cosign's default and what
 * its verifier expects with `--key`).
 *
 * No key material and no password ever appears in an error: messages name the
 * key's source (a path or an environment variable), never its bytes.
 */
import { createPrivateKey, createPublicKey, scrypt as scryptCb, type KeyObject } from "node:crypto";
import { OcibuildError } from "../errors.js";

export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    out.push({ label: m[1]!, der: Buffer.from(m[2]!.replace(/[^A-Za-z0-9+/=]/g, ""), "base64") });
  }
  return out;
}

const ENCRYPTED_LABELS: ReadonlySet<string> = new Set(["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"]);

/** The scrypt cost cosign uses; a file asking for far more is refused rather than run. */
const MAX_SCRYPT_N = 1 << 20;

function keyError(source: string, why: string, cause?: unknown): OcibuildError {
  return new OcibuildError("SIGN_KEY_INVALID", `signing key ${source}: ${why}`, cause === undefined ? {} : { cause });
}

function checkP256(key: KeyObject, source: string): void {
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    const what = key.asymmetricKeyType === "ec" ? `EC key on ${key.asymmetricKeyDetails?.namedCurve ?? "an unknown curve"}` : `${key.asymmetricKeyType ?? "unknown"} key`;
    throw keyError(source, `is an ${what}; cosign's key-based signatures use ECDSA P-256`);
  }
}

function scrypt(password: Buffer, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, 32, { N: n, r, p, maxmem: 256 * n * r + 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

interface EncryptedKeyFile {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

function parseEncrypted(der: Buffer, source: string): EncryptedKeyFile {
  let doc: unknown;
  try {
    doc = JSON.parse(der.toString("utf8"));
  } catch {
    throw keyError(source, "the encrypted key is not cosign's JSON format");
  }
  const d = doc as Partial<EncryptedKeyFile>;
  const params = d.kdf?.params;
  if (d.kdf?.name !== "scrypt" || d.cipher?.name !== "nacl/secretbox" || typeof d.ciphertext !== "string" || !params) {
    throw keyError(source, `the encrypted key uses ${d.kdf?.name ?? "no"} KDF and ${d.cipher?.name ?? "no"} cipher; cosign's format is scrypt with nacl/secretbox`);
  }
  const { N, r, p } = params;
  const valid = (x: unknown): x is number => Number.isInteger(x) && (x as number) > 0;
  if (!valid(N) || !valid(r) || !valid(p) || (N & (N - 1)) !== 0 || N > MAX_SCRYPT_N || r * p >= 1 << 30) {
    throw keyError(source, "the encrypted key's scrypt parameters are out of range");
  }
  return d as EncryptedKeyFile;
}

async function decryptCosignKey(der: Buffer, password: string | undefined, source: string): Promise<Buffer> {
  if (password === undefined) {
    throw new OcibuildError("SIGN_KEY_PASSWORD_REQUIRED", `signing key ${source} is encrypted: give its password (a password file, or COSIGN_PASSWORD)`);
  }
  const file = parseEncrypted(der, source);
  const salt = Buffer.from(file.kdf.salt, "base64");
  const nonce = Buffer.from(file.cipher.nonce, "base64");
  if (nonce.length !== 24) throw keyError(source, "the encrypted key's nonce is not 24 bytes");
  const key = await scrypt(Buffer.from(password, "utf8"), salt, file.kdf.params.N, file.kdf.params.r, file.kdf.params.p);
  // Loaded only for an encrypted key: a build without one never pays for it.
  const { xsalsa20poly1305 } = await import("@noble/ciphers/salsa.js");
  try {
    return Buffer.from(xsalsa20poly1305(key, nonce).decrypt(Buffer.from(file.ciphertext, "base64")));
  } catch {
    throw new OcibuildError("SIGN_KEY_PASSWORD_WRONG", `signing key ${source}: the password does not decrypt it`);
  }
}

/**
 * Reads a private signing key. `source` names where it came from (a path) for
 * errors; `password` is needed only for cosign's encrypted format.
 */
export async function loadSigningKey(pem: string, source: string, password?: string): Promise<SigningKey> {
  const blocks = pemBlocks(pem);
  const block = blocks.find((b) => b.label === "PRIVATE KEY" || b.label === "EC PRIVATE KEY" || ENCRYPTED_LABELS.has(b.label));
  if (!block) {
    const found = blocks.map((b) => b.label).join(", ");
    throw keyError(source, found ? `holds ${found}, not a private key` : "is not a PEM private key");
  }
  let privateKey: KeyObject;
  try {
    if (ENCRYPTED_LABELS.has(block.label)) {
      const der = await decryptCosignKey(block.der, password, source);
      privateKey = createPrivateKey({ key: der, format: "der", type: "pkcs8" });
    } else {
      privateKey = createPrivateKey({ key: block.der, format: "der", type: block.label === "EC PRIVATE KEY" ? "sec1" : "pkcs8" });
    }
  } catch (e) {
    if (e instanceof OcibuildError) throw e;
    throw keyError(source, "its DER is not a valid key");
  }
  checkP256(privateKey, source);
  return { privateKey, publicKey: createPublicKey(privateKey) };
}

/** Reads a public key (`PUBLIC KEY`, as `cosign public-key` prints it) for verification. */
export function loadPublicKey(pem: string, source: string): KeyObject {
  const block = pemBlocks(pem).find((b) => b.label === "PUBLIC KEY");
  if (!block) throw new OcibuildError("VERIFY_KEY_INVALID", `public key ${source} is not a PEM public key`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: block.der, format: "der", type: "spki" });
  } catch {
    throw new OcibuildError("VERIFY_KEY_INVALID", `public key ${source}: its DER is not a valid key`);
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new OcibuildError("VERIFY_KEY_INVALID", `public key ${source} is not an ECDSA P-256 key`);
  }
  return key;
}
