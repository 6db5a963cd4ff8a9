/**
 * A build's last part, after its stages ran: each platform's image assembled (with
 * the manifest annotations asked for and the base image's name and digest), the
 * attestations attached (provenance and SBOM, as BuildKit stores them: an index then
 * holds the images and their attestation manifests), the result pushed and written,
 * and, with a signing key, every pushed manifest signed in cosign's format with its
 * statements attached as signed `.att` attestations.
 */
import { readFile } from "node:fs/promises";
import { OcibuildError } from "../errors.js";
import { annotationsAt, BASE_DIGEST_ANNOTATION, BASE_NAME_ANNOTATION, type Annotation } from "../oci/annotations.js";
import type { Digest } from "../oci/digest.js";
import type { OciLayout } from "../oci/layout.js";
import { formatPlatform, hostPlatform, type Platform } from "../oci/platform.js";
import type { ImageReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { signManifest } from "../sign/attach.js";
import { loadSigningKey, type SigningKey } from "../sign/keys.js";
import { VERSION } from "../version.js";
import type { SbomLayer } from "../attest/sbom.js";
import type { ProvenanceInput } from "../attest/provenance.js";
import { attestImages, type AttestOptions, type MaterialSet } from "./attest.js";
import type { EventSink } from "./events.js";
import type { DiffIdRecords } from "./fs/base-layers.js";
import { assembleImage, assembleIndex, type BuiltArtifact, type BuiltImage } from "./image.js";
import { stageImage } from "./stage-image.js";
import type { StageState } from "./stage-state.js";
import type { StepReport } from "./step-report.js";

/** A signing key (BuildOptions.sign): a PEM file, and its password for cosign's encrypted format. */
export interface SignOptions {
  /** Path of the private key (PKCS#8, SEC1, or cosign's encrypted key). */
  key: string;
  /** The password of an encrypted key; else read from `passwordFile`, else COSIGN_PASSWORD. */
  password?: string;
  passwordFile?: string;
}

/** One platform's image and what was attached to it. */
export interface AttestationRecord {
  platform: string;
  /** The image manifest's digest. */
  image: Digest;
  /** The attestation manifest's digest in the index. */
  manifest: Digest;
  /** The predicate types attached. */
  predicateTypes: string[];
}

/** What signing pushed, per repository and signed digest. */
export interface SignatureRecord {
  repository: string;
  digest: Digest;
  /** The `.sig` manifest's digest. */
  signature: Digest;
  /** The `.att` manifest's digest, when statements were attached. */
  attestations?: Digest;
}

/** Reads the signing key before the build starts, so a bad key or password fails in a second, not after the build. */
export async function readSigningKey(sign: SignOptions | undefined, env: Record<string, string | undefined>): Promise<SigningKey | undefined> {
  if (!sign) return undefined;
  const pem = await readFile(sign.key, "utf8").catch((e: NodeJS.ErrnoException) => {
    throw new OcibuildError("SIGN_KEY_UNREADABLE", `signing key ${sign.key} cannot be read (${e.code ?? e.message})`, { file: sign.key, cause: e });
  });
  return loadSigningKey(pem, sign.key, sign.password ?? (await passwordFrom(sign.passwordFile)) ?? env.COSIGN_PASSWORD);
}

async function passwordFrom(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  const text = await readFile(file, "utf8").catch((e: NodeJS.ErrnoException) => {
    throw new OcibuildError("SIGN_KEY_UNREADABLE", `the signing key's password file ${file} cannot be read (${e.code ?? e.message})`, { file, cause: e });
  });
  return text.replace(/\r?\n$/, "");
}

/** The base image annotations buildx adds: the final stage's root base, by name and digest. */
function baseAnnotations(state: StageState): Record<string, string> {
  const at = state.baseName.lastIndexOf("@");
  if (state.baseName === "scratch" || at < 0) return {};
  return { [BASE_NAME_ANNOTATION]: state.baseName.slice(0, at), [BASE_DIGEST_ANNOTATION]: state.baseName.slice(at + 1) };
}

export interface AssembleInput {
  finals: readonly { state: StageState }[];
  targets: readonly Platform[];
  sourceDateEpoch?: number;
  labels?: Record<string, string>;
  annotations?: readonly Annotation[];
}

/** Every platform's image, with the manifest-level annotations. */
export function assembleImages(a: AssembleInput): { platform: Platform; image: BuiltImage }[] {
  return a.finals.map((f, i) => {
    const platform = a.targets[i]!;
    const annotations = { ...baseAnnotations(f.state), ...annotationsAt(a.annotations ?? [], "manifest", platform) };
    return { platform, image: assembleImage(f.state, { sourceDateEpoch: a.sourceDateEpoch, labels: a.labels, annotations }) };
  });
}

/** The layers of an image as the SBOM scanner reads them. */
function sbomLayers(image: BuiltImage, src: { content: OciLayout; registry: RegistryClient; diffIds?: DiffIdRecords; maxLayerSize?: number }, platform: Platform) {
  return async (): Promise<SbomLayer[]> => {
    const layers = await stageImage(image, src, platform).layers();
    return layers.map((l) => ({ diffId: l.diffId, digest: l.descriptor.digest, mediaType: l.descriptor.mediaType, open: (signal?: AbortSignal) => l.open(signal) }));
  };
}

export interface AttachInput {
  images: readonly { platform: Platform; image: BuiltImage }[];
  attest?: AttestOptions;
  annotations?: readonly Annotation[];
  names: readonly ImageReference[];
  materials: MaterialSet;
  provenance: Omit<ProvenanceInput, "materials" | "builderVersion" | "builderPlatform">;
  steps: readonly StepReport[];
  /** For image i, what else its SBOM scans (stages, the context). */
  extraScans?: (i: number) => Promise<readonly { name: string; layers: readonly SbomLayer[] }[]>;
  blobs: { content: OciLayout; registry: RegistryClient; diffIds?: DiffIdRecords; maxLayerSize?: number };
  sourceDateEpoch?: number;
  emit: EventSink;
  signal?: AbortSignal;
}

/** The built artifact: the images, with an index when there are several or when attestations go with them. */
export async function attachAttestations(a: AttachInput): Promise<BuiltArtifact> {
  const names = a.names.map((n) => `${n.name}${n.tag ? `:${n.tag}` : ""}`);
  const steps = a.attest?.provenance?.mode === "max" ? a.steps.map((s) => ({ stage: s.stage, instruction: s.instruction, line: s.line, cacheKey: s.key, cached: s.cached })) : undefined;
  const attestations = await attestImages(
    a.images.map(({ platform, image }, i) => ({ digest: image.manifest.digest, platform, sbomLayers: sbomLayers(image, a.blobs, platform), ...(a.extraScans ? { extraScans: () => a.extraScans!(i) } : {}) })),
    a.attest ?? {},
    {
      names,
      provenance: { ...a.provenance, builderVersion: VERSION, builderPlatform: formatPlatform(hostPlatform()), ...(steps ? { steps } : {}) },
      materials: a.materials,
      sourceDateEpoch: a.sourceDateEpoch,
      signal: a.signal,
      onWarning: (message) => a.emit({ type: "log", level: "warn", message: `sbom: ${message}` }),
    },
  );
  const all = a.annotations ?? [];
  if (a.images.length === 1 && attestations.length === 0) return { images: a.images };
  const index = assembleIndex(a.images, {
    annotations: annotationsAt(all, "index"),
    descriptorAnnotations: (p) => annotationsAt(all, "manifest-descriptor", p),
    attestations,
  });
  return { images: a.images, index, attestations };
}

/** What attaching recorded, for the result. */
export function attestationRecords(a: BuiltArtifact): AttestationRecord[] {
  return (a.attestations ?? []).map((m, i) => ({
    platform: formatPlatform(a.images[i]!.platform),
    image: a.images[i]!.image.manifest.digest,
    manifest: m.manifest.digest,
    predicateTypes: m.layers.map((l) => l.descriptor.annotations?.["in-toto.io/predicate-type"] ?? ""),
  }));
}

/** Signs what was pushed to each repository: the top manifest or index, and each platform's image with its statements as `.att`. */
export async function signPushed(key: SigningKey, a: BuiltArtifact, top: Digest, pushTo: readonly ImageReference[], registry: RegistryClient, emit: EventSink, signal?: AbortSignal): Promise<SignatureRecord[]> {
  const out: SignatureRecord[] = [];
  const repos = [...new Map(pushTo.map((r) => [r.name, r])).values()];
  for (const repo of repos) {
    const record = async (digest: Digest, attestations?: { predicateType: string; statement: Uint8Array }[]) => {
      const r = await signManifest(registry, repo, digest, key, { attestations, signal });
      out.push({ repository: repo.name, digest, signature: r.signature, ...(r.attestations ? { attestations: r.attestations } : {}) });
      emit({ type: "log", level: "info", message: `signed ${repo.name}@${digest} (${r.signature})` });
    };
    await record(top);
    for (const [i, { image }] of a.images.entries()) {
      if (image.manifest.digest === top && !a.attestations?.[i]) continue;
      const layers = a.attestations?.[i]?.layers ?? [];
      await record(image.manifest.digest, layers.map((l) => ({ predicateType: l.descriptor.annotations?.["in-toto.io/predicate-type"] ?? "", statement: l.bytes })));
    }
  }
  return out;
}

