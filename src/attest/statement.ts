/**
 * in-toto statements and the attestation manifests BuildKit stores them in: one
 * OCI manifest per image manifest, its layers `application/vnd.in-toto+json` with
 * an `in-toto.io/predicate-type` annotation, its config an `unknown/unknown` image
 * config, named in the index after the runnable manifests with platform
 * `unknown/unknown` and the `vnd.docker.reference.type: attestation-manifest` and
 * `vnd.docker.reference.digest` annotations (BuildKit's attestation storage), so
 * tools that read BuildKit's attestations read these.
 */
import { digestOf, hexOf, type Digest } from "../oci/digest.js";
import { MediaType } from "../oci/media-types.js";
import { descriptorOf, encodeJson, type Blob, type Descriptor, type ImageManifest } from "../oci/manifest.js";

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1";
export const IN_TOTO_MEDIA_TYPE = "application/vnd.in-toto+json";
export const PREDICATE_TYPE_LAYER_ANNOTATION = "in-toto.io/predicate-type";
export const REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type";
export const REFERENCE_DIGEST_ANNOTATION = "vnd.docker.reference.digest";
export const ATTESTATION_MANIFEST_TYPE = "attestation-manifest";

export interface Subject {
  readonly name: string;
  readonly digest: { readonly sha256: string };
}

/** A statement's bytes, and its predicate type (for the layer annotation). */
export interface EncodedStatement {
  readonly predicateType: string;
  readonly bytes: Uint8Array;
}

/** The subjects of an image manifest's statements: one per name it is pushed as (BuildKit's `pkg:docker/NAME@TAG?platform=...`), or `_`. */
export function subjectsFor(digest: Digest, names: readonly string[], platform?: string): Subject[] {
  const sha256 = hexOf(digest);
  if (names.length === 0) return [{ name: "_", digest: { sha256 } }];
  const query = platform ? `?platform=${encodeURIComponent(platform)}` : "";
  return names.map((n) => ({ name: `pkg:docker/${n}${query}`, digest: { sha256 } }));
}

export function encodeStatement(predicateType: string, subject: readonly Subject[], predicate: unknown): EncodedStatement {
  const statement = { _type: STATEMENT_TYPE, predicateType, subject, predicate };
  return { predicateType, bytes: new TextEncoder().encode(JSON.stringify(statement)) };
}

/** An attestation manifest: its manifest and config, its layers' bytes, and the index entry that names it. */
export interface AttestationManifest {
  readonly manifest: Blob<ImageManifest>;
  readonly config: Blob;
  readonly layers: readonly { readonly descriptor: Descriptor; readonly bytes: Uint8Array }[];
  readonly indexEntry: Descriptor;
}

export function attestationManifest(subject: Digest, statements: readonly EncodedStatement[]): AttestationManifest {
  const layers = statements.map((s) => {
    const descriptor: Descriptor = { mediaType: IN_TOTO_MEDIA_TYPE, digest: digestOf(s.bytes), size: s.bytes.length, annotations: { [PREDICATE_TYPE_LAYER_ANNOTATION]: s.predicateType } };
    return { descriptor, bytes: s.bytes };
  });
  const config = encodeJson(MediaType.OCI_CONFIG, {
    architecture: "unknown",
    os: "unknown",
    config: {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.descriptor.digest) },
  });
  const manifest = encodeJson<ImageManifest>(MediaType.OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: descriptorOf(config),
    layers: layers.map((l) => l.descriptor),
  });
  const indexEntry = descriptorOf(manifest, {
    annotations: { [REFERENCE_DIGEST_ANNOTATION]: subject, [REFERENCE_TYPE_ANNOTATION]: ATTESTATION_MANIFEST_TYPE },
    platform: { architecture: "unknown", os: "unknown" },
  });
  return { manifest, config, layers, indexEntry };
}

