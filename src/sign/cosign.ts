/**
 * sigstore/cosign's key-based signature format, written and read natively:
 *
 * - A signature is a "simple signing" payload naming the signed manifest's digest
 *   and repository, stored as a layer (`application/vnd.dev.cosign.simplesigning.v1+json`)
 *   of an OCI manifest tagged `sha256-<hex>.sig` in the same repository; the
 *   base64 DER ECDSA signature over the payload's bytes is the layer descriptor's
 *   `dev.cosignproject.cosign/signature` annotation. More signatures are more layers.
 * - An attestation is a DSSE envelope (`application/vnd.dsse.envelope.v1+json`)
 *   holding an in-toto statement, signed over DSSE's pre-authentication encoding,
 *   as a layer of the manifest tagged `sha256-<hex>.att`, annotated with its
 *   `predicateType`.
 *
 * The signature manifests' configs follow go-containerregistry's empty image with
 * layers appended, as cosign pushes them. Everything here is pure: the registry
 * side is sign/attach.ts.
 */
import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { digestOf, hexOf, type Digest } from "../oci/digest.js";
import { MediaType } from "../oci/media-types.js";
import { descriptorOf, encodeJson, type Blob, type Descriptor, type ImageManifest } from "../oci/manifest.js";

export const SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json";
export const DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json";
export const SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";
export const PREDICATE_TYPE_ANNOTATION = "predicateType";
export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const SIMPLE_SIGNING_TYPE = "cosign container image signature";

/** The tag cosign stores `digest`'s signatures (`sig`) or attestations (`att`) under. */
export function signatureTag(digest: Digest, suffix: "sig" | "att"): string {
  return `sha256-${hexOf(digest)}.${suffix}`;
}

export interface SimpleSigningPayload {
  critical: { identity: { "docker-reference": string }; image: { "docker-manifest-digest": string }; type: string };
  optional: Record<string, string> | null;
}

/** The payload cosign signs for `digest` in `repository` (registry/name, no tag). */
export function simpleSigningPayload(repository: string, digest: Digest): Uint8Array {
  const payload: SimpleSigningPayload = {
    critical: { identity: { "docker-reference": repository }, image: { "docker-manifest-digest": digest }, type: SIMPLE_SIGNING_TYPE },
    optional: null,
  };
  return new TextEncoder().encode(JSON.stringify(payload));
}

/** ECDSA P-256 over SHA-256, DER-encoded, base64: what cosign puts in the annotation. */
export function signBytes(key: KeyObject, bytes: Uint8Array): string {
  return cryptoSign("sha256", bytes, key).toString("base64");
}

export function verifyBytes(key: KeyObject, bytes: Uint8Array, signatureB64: string): boolean {
  const sig = Buffer.from(signatureB64, "base64");
  if (sig.length === 0) return false;
  try {
    return cryptoVerify("sha256", bytes, key, sig);
  } catch {
    return false;
  }
}

/** DSSE's pre-authentication encoding: what an envelope's signature is over. */
export function pae(payloadType: string, payload: Uint8Array): Uint8Array {
  const type = Buffer.from(payloadType, "utf8");
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), Buffer.from(payload)]);
}

export interface DsseEnvelope {
  payloadType: string;
  payload: string;
  signatures: { keyid: string; sig: string }[];
}

export function dsseEnvelope(key: KeyObject, statement: Uint8Array): Uint8Array {
  const env: DsseEnvelope = {
    payloadType: IN_TOTO_PAYLOAD_TYPE,
    payload: Buffer.from(statement).toString("base64"),
    signatures: [{ keyid: "", sig: signBytes(key, pae(IN_TOTO_PAYLOAD_TYPE, statement)) }],
  };
  return new TextEncoder().encode(JSON.stringify(env));
}

/** The statement inside an envelope, if its signature verifies with `key`. */
export function openDsseEnvelope(key: KeyObject, bytes: Uint8Array): Uint8Array | undefined {
  let env: Partial<DsseEnvelope>;
  try {
    env = JSON.parse(Buffer.from(bytes).toString("utf8")) as Partial<DsseEnvelope>;
  } catch {
    return undefined;
  }
  if (env.payloadType !== IN_TOTO_PAYLOAD_TYPE || typeof env.payload !== "string" || !Array.isArray(env.signatures)) return undefined;
  const statement = Buffer.from(env.payload, "base64");
  const signed = pae(env.payloadType, statement);
  return env.signatures.some((s) => typeof s?.sig === "string" && verifyBytes(key, signed, s.sig)) ? statement : undefined;
}

/** A layer of a signature manifest: its bytes and its descriptor (with annotations). */
export interface SignatureLayer {
  readonly bytes: Uint8Array;
  readonly descriptor: Descriptor;
}

export function signatureLayer(mediaType: string, bytes: Uint8Array, annotations: Record<string, string>): SignatureLayer {
  return { bytes, descriptor: { mediaType, digest: digestOf(bytes), size: bytes.length, annotations } };
}

const ZERO_TIME = "0001-01-01T00:00:00Z";

/**
 * The manifest and config of a `.sig`/`.att` image holding `layers` (cosign's
 * uncompressed layers: the DiffID is the digest).
 */
export function signatureManifest(layers: readonly SignatureLayer[]): { manifest: Blob<ImageManifest>; config: Blob } {
  const config = encodeJson(MediaType.OCI_CONFIG, {
    architecture: "",
    created: ZERO_TIME,
    history: layers.map(() => ({ created: ZERO_TIME })),
    os: "",
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.descriptor.digest) },
    config: {},
  });
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: descriptorOf(config),
    layers: layers.map((l) => l.descriptor),
  };
  return { manifest: encodeJson(MediaType.OCI_MANIFEST, manifest), config };
}

/** Whether `layers` already holds a layer with the same bytes and annotations (a repeated signature is not added twice). */
export function hasLayer(layers: readonly Descriptor[], layer: SignatureLayer): boolean {
  const want = JSON.stringify(layer.descriptor.annotations ?? {});
  return layers.some((d) => d.digest === layer.descriptor.digest && JSON.stringify(d.annotations ?? {}) === want);
}
