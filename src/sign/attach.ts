/**
 * Signatures and attestations in a registry, as cosign stores them: sign a pushed
 * manifest (`sha256-<hex>.sig`), attach signed in-toto statements (`.att`), and
 * verify what is attached to a reference with a public key.
 *
 * Re-signing is idempotent: a signature for the same payload that already verifies
 * with the same key is not added again; an attestation replaces one of the same
 * predicate type (cosign's `attest --replace`), so a rebuilt image does not grow
 * its `.att` manifest forever.
 */
import { Readable } from "node:stream";
import type { KeyObject } from "node:crypto";
import { isOcibuildError } from "../errors.js";
import type { Digest } from "../oci/digest.js";
import { withTag, type ImageReference } from "../oci/reference.js";
import type { Descriptor } from "../oci/manifest.js";
import type { RegistryClient } from "../oci/registry/index.js";
import {
  DSSE_MEDIA_TYPE,
  PREDICATE_TYPE_ANNOTATION,
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING_MEDIA_TYPE,
  dsseEnvelope,
  signBytes,
  signatureLayer,
  signatureManifest,
  signatureTag,
  simpleSigningPayload,
  verifyBytes,
  type SignatureLayer,
} from "./cosign.js";
import type { SigningKey } from "./keys.js";

/** An in-toto statement to attach, and its predicate type. */
export interface Attestation {
  readonly predicateType: string;
  readonly statement: Uint8Array;
}

export interface SignResult {
  /** The digest that was signed. */
  readonly digest: Digest;
  /** The `.sig` manifest's digest. */
  readonly signature: Digest;
  /** The `.att` manifest's digest, when attestations were attached. */
  readonly attestations?: Digest;
}

/** The `.sig` or `.att` manifest at `ref`: its digest and layers, or none (one GET; a 404 is "none yet"). */
export async function signatureManifestAt(client: RegistryClient, ref: ImageReference, signal?: AbortSignal): Promise<{ digest?: Digest; layers: Descriptor[] }> {
  try {
    const m = await client.getManifest(ref, { signal });
    return { digest: m.blob.digest, layers: m.kind === "manifest" ? [...m.blob.parsed.layers] : [] };
  } catch (e) {
    if (isOcibuildError(e) && e.code === "REGISTRY_NOT_FOUND") return { layers: [] };
    throw e;
  }
}

async function pushSignatureImage(client: RegistryClient, ref: ImageReference, kept: readonly Descriptor[], added: readonly SignatureLayer[], signal?: AbortSignal): Promise<Digest> {
  const layers: SignatureLayer[] = [...kept.map((descriptor) => ({ descriptor, bytes: new Uint8Array() })), ...added];
  const { manifest, config } = signatureManifest(layers);
  const push = (d: Descriptor, bytes: Uint8Array) => client.pushBlob(ref, d, () => Readable.from([Buffer.from(bytes)]), { signal });
  await Promise.all([...added.map((l) => push(l.descriptor, l.bytes)), push({ mediaType: config.mediaType, digest: config.digest, size: config.bytes.length }, config.bytes)]);
  return client.putManifest(ref, manifest, signal);
}

/** Whether a `.sig` layer already signs `payload` with this key (its bytes are the payload's, so only the annotation is checked). */
function alreadySigned(layers: readonly Descriptor[], payloadLayer: SignatureLayer, key: KeyObject, payload: Uint8Array): boolean {
  return layers.some(
    (d) => d.mediaType === SIMPLE_SIGNING_MEDIA_TYPE && d.digest === payloadLayer.descriptor.digest && verifyBytes(key, payload, d.annotations?.[SIGNATURE_ANNOTATION] ?? ""),
  );
}

/** Signs `digest` in `repo`'s repository (its tag and digest are ignored), and attaches `attestations` signed with the same key. */
export async function signManifest(
  client: RegistryClient,
  repo: ImageReference,
  digest: Digest,
  key: SigningKey,
  opts: { attestations?: readonly Attestation[]; signal?: AbortSignal } = {},
): Promise<SignResult> {
  const sigRef = withTag(repo, signatureTag(digest, "sig"));
  const payload = simpleSigningPayload(repo.name, digest);
  const layer = signatureLayer(SIMPLE_SIGNING_MEDIA_TYPE, payload, { [SIGNATURE_ANNOTATION]: signBytes(key.privateKey, payload) });
  const current = await signatureManifestAt(client, sigRef, opts.signal);
  const signature = current.digest !== undefined && alreadySigned(current.layers, layer, key.publicKey, payload)
    ? current.digest
    : await pushSignatureImage(client, sigRef, current.layers, [layer], opts.signal);
  if (!opts.attestations?.length) return { digest, signature };
  const attRef = withTag(repo, signatureTag(digest, "att"));
  const types = new Set(opts.attestations.map((a) => a.predicateType));
  const kept = (await signatureManifestAt(client, attRef, opts.signal)).layers.filter((d) => !types.has(d.annotations?.[PREDICATE_TYPE_ANNOTATION] ?? ""));
  const added = opts.attestations.map((a) =>
    signatureLayer(DSSE_MEDIA_TYPE, dsseEnvelope(key.privateKey, a.statement), { [PREDICATE_TYPE_ANNOTATION]: a.predicateType, [SIGNATURE_ANNOTATION]: "" }),
  );
  return { digest, signature, attestations: await pushSignatureImage(client, attRef, kept, added, opts.signal) };
}

