/**
 * `ocibuild verify`: checks the cosign signatures attached to a reference with a
 * public key, that a verified payload names the reference's own digest, and (for an
 * index) every platform's manifest the same way; then reads the attestations: the
 * in-toto statements in the index's attestation manifests (covered by the index's
 * signature, since the index names them by digest) and the signed `.att` envelopes.
 */
import type { KeyObject } from "node:crypto";
import { OcibuildError } from "../errors.js";
import type { Digest } from "../oci/digest.js";
import { withDigest, withTag, type ImageReference } from "../oci/reference.js";
import type { Descriptor } from "../oci/manifest.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { signatureManifestAt } from "./attach.js";
import { DSSE_MEDIA_TYPE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE, openDsseEnvelope, signatureTag, verifyBytes, type SimpleSigningPayload } from "./cosign.js";

export const ATTESTATION_REFERENCE_TYPE = "vnd.docker.reference.type";
export const ATTESTATION_REFERENCE_DIGEST = "vnd.docker.reference.digest";
export const IN_TOTO_LAYER_MEDIA_TYPE = "application/vnd.in-toto+json";

export interface Statement {
  readonly predicateType: string;
  readonly subject: { name?: string; digest?: Record<string, string> }[];
  readonly predicate: unknown;
  /** Where it was found: an attestation manifest in the index, or a signed `.att` envelope. */
  readonly source: "index" | "att";
}

export interface VerifiedManifest {
  readonly digest: Digest;
  readonly platform?: string;
  /** The repository the verified payload names (`docker-reference`). */
  readonly signedReference: string;
  readonly statements: readonly Statement[];
}

export interface VerifyResult {
  readonly reference: string;
  readonly digest: Digest;
  readonly manifests: readonly VerifiedManifest[];
}

function parsePayload(bytes: Uint8Array): SimpleSigningPayload | undefined {
  try {
    const p = JSON.parse(Buffer.from(bytes).toString("utf8")) as SimpleSigningPayload;
    return p?.critical?.type === SIMPLE_SIGNING_TYPE ? p : undefined;
  } catch {
    return undefined;
  }
}

async function signatureLayers(client: RegistryClient, ref: ImageReference, suffix: "sig" | "att", signal?: AbortSignal): Promise<{ ref: ImageReference; layers: Descriptor[] }> {
  const tagged = withTag(ref, signatureTag(ref.digest!, suffix));
  return { ref: tagged, layers: (await signatureManifestAt(client, tagged, signal)).layers };
}

/** The repository a good signature of `digest` names; throws when none verifies or none names this digest. */
async function checkSignature(client: RegistryClient, ref: ImageReference, key: KeyObject, signal?: AbortSignal): Promise<string> {
  const digest = ref.digest!;
  const { ref: sigRef, layers } = await signatureLayers(client, ref, "sig", signal);
  const candidates = layers.filter((d) => d.mediaType === SIMPLE_SIGNING_MEDIA_TYPE);
  if (candidates.length === 0) throw new OcibuildError("VERIFY_NO_SIGNATURE", `no signature for ${ref.name}@${digest} (looked for tag ${sigRef.tag})`);
  let otherDigest: string | undefined;
  for (const d of candidates) {
    const payload = await client.getBlobBytes(sigRef, d.digest, { size: d.size, signal });
    if (!verifyBytes(key, payload, d.annotations?.[SIGNATURE_ANNOTATION] ?? "")) continue;
    const parsed = parsePayload(payload);
    const signed = parsed?.critical.image["docker-manifest-digest"];
    if (signed === digest) return parsed!.critical.identity["docker-reference"];
    otherDigest = signed ?? "nothing";
  }
  if (otherDigest !== undefined) {
    throw new OcibuildError("VERIFY_DIGEST_MISMATCH", `the signature at ${sigRef} verifies, but it signs ${otherDigest}, not ${ref.name}@${digest}`);
  }
  throw new OcibuildError("VERIFY_SIGNATURE_INVALID", `none of the ${candidates.length} signature(s) of ${ref.name}@${digest} verifies with the given key`);
}

function toStatement(bytes: Uint8Array, source: Statement["source"]): Statement | undefined {
  try {
    const s = JSON.parse(Buffer.from(bytes).toString("utf8")) as Omit<Statement, "source">;
    return typeof s.predicateType === "string" && Array.isArray(s.subject) ? { ...s, source } : undefined;
  } catch {
    return undefined;
  }
}

function namesDigest(s: Statement, digest: Digest): boolean {
  return s.subject.some((x) => x.digest?.sha256 !== undefined && `sha256:${x.digest.sha256}` === digest);
}

/** Statements in the index's attestation manifest for `digest`, and in `digest`'s signed `.att`. */
async function statementsFor(client: RegistryClient, ref: ImageReference, key: KeyObject, attManifest: Descriptor | undefined, signal?: AbortSignal): Promise<Statement[]> {
  const out: Statement[] = [];
  if (attManifest) {
    const m = await client.getManifest(withDigest(ref, attManifest.digest), { signal });
    const layers = m.kind === "manifest" ? m.blob.parsed.layers.filter((l) => l.mediaType === IN_TOTO_LAYER_MEDIA_TYPE) : [];
    for (const l of layers) {
      const s = toStatement(await client.getBlobBytes(ref, l.digest, { size: l.size, signal }), "index");
      if (s && namesDigest(s, ref.digest!)) out.push(s);
    }
  }
  const att = await signatureLayers(client, ref, "att", signal);
  for (const l of att.layers.filter((d) => d.mediaType === DSSE_MEDIA_TYPE)) {
    const opened = openDsseEnvelope(key, await client.getBlobBytes(att.ref, l.digest, { size: l.size, signal }));
    const s = opened && toStatement(opened, "att");
    if (s && namesDigest(s, ref.digest!)) out.push(s);
  }
  return out;
}

function platformText(d: Descriptor): string | undefined {
  const p = d.platform;
  return p ? [p.os, p.architecture, p.variant].filter(Boolean).join("/") : undefined;
}

/** Verifies `ref` (a tag or digest) and, for an index, each platform's manifest, with `key`. */
export async function verifyImage(client: RegistryClient, ref: ImageReference, key: KeyObject, signal?: AbortSignal): Promise<VerifyResult> {
  const top = await client.getManifest(ref, { signal });
  const digest = top.blob.digest;
  const pinned = withDigest(ref, digest);
  const signedReference = await checkSignature(client, pinned, key, signal);
  if (top.kind === "manifest") {
    return { reference: ref.familiar, digest, manifests: [{ digest, signedReference, statements: await statementsFor(client, pinned, key, undefined, signal) }] };
  }
  const entries = top.blob.parsed.manifests;
  const attestationOf = (d: Digest) => entries.find((e) => e.annotations?.[ATTESTATION_REFERENCE_TYPE] === "attestation-manifest" && e.annotations[ATTESTATION_REFERENCE_DIGEST] === d);
  const manifests: VerifiedManifest[] = [];
  for (const e of entries.filter((x) => x.annotations?.[ATTESTATION_REFERENCE_TYPE] !== "attestation-manifest")) {
    const child = withDigest(ref, e.digest);
    const childSigned = await checkSignature(client, child, key, signal);
    manifests.push({ digest: e.digest, platform: platformText(e), signedReference: childSigned, statements: await statementsFor(client, child, key, attestationOf(e.digest), signal) });
  }
  return { reference: ref.familiar, digest, manifests };
}
