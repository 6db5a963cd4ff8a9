/**
 * The supply-chain outputs of a build: for each platform's image, an SLSA provenance
 * statement and an SPDX SBOM of its filesystem, stored as BuildKit stores them (an
 * attestation manifest per image, named in the index after the images), and the
 * materials provenance lists (base images by digest, ADD URLs and git sources with
 * their checksums) gathered as the build resolves them.
 */
import { generateSbom, type SbomLayer } from "../attest/sbom.js";
import { SPDX_PREDICATE_TYPE } from "../attest/sbom-spdx.js";
import { provenanceStatement, type Material, type ProvenanceInput, type ProvenanceMode, type ProvenanceVersion } from "../attest/provenance.js";
import { attestationManifest, encodeStatement, subjectsFor, type AttestationManifest, type EncodedStatement } from "../attest/statement.js";
import type { Digest } from "../oci/digest.js";
import { formatPlatform, type Platform } from "../oci/platform.js";

/** What to attach: BuildKit's `--provenance` and `--sbom` (`--attest type=...`). */
export interface AttestOptions {
  provenance?: { mode: ProvenanceMode; version?: ProvenanceVersion };
  /** An SBOM of the final stage's filesystem, or of `scanStage`'s (BUILDKIT_SBOM_SCAN_STAGE). */
  sbom?: { scanStage?: string };
}

/** The base images and remote sources a build used, recorded as it resolves them. */
export class MaterialSet {
  private readonly all = new Map<string, { material: Material; platform?: string }>();

  /** `platform` limits a material to that platform's image (a base image); without it, every image used it. */
  add(material: Material, platform?: Platform): void {
    const p = platform ? formatPlatform(platform) : undefined;
    this.all.set(`${p ?? "*"} ${material.uri} ${JSON.stringify(material.digest)}`, { material, ...(p ? { platform: p } : {}) });
  }

  /** The materials of `platform`'s image, sorted by URI. */
  forPlatform(platform: Platform): Material[] {
    const p = formatPlatform(platform);
    return [...this.all.values()]
      .filter((m) => m.platform === undefined || m.platform === p)
      .map((m) => m.material)
      .sort((a, b) => (a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0));
  }
}

/** The BuildKit-style URI of a base image: `pkg:docker/NAME@TAG?platform=OS%2FARCH`. */
export function baseImageMaterial(name: string, tag: string | undefined, digest: Digest, platform: Platform): Material {
  const at = tag ? `@${tag}` : "";
  return { uri: `pkg:docker/${name}${at}?platform=${encodeURIComponent(formatPlatform(platform))}`, digest: { sha256: digest.slice("sha256:".length) } };
}

/** One image to attest: its manifest digest, platform, and the layers its SBOM scans. */
export interface AttestTarget {
  readonly digest: Digest;
  readonly platform: Platform;
  readonly sbomLayers: () => Promise<readonly SbomLayer[]>;
  /** More filesystems the SBOM scans (BUILDKIT_SBOM_SCAN_STAGE's stages, the context): one more SPDX statement each. */
  readonly extraScans?: () => Promise<readonly { name: string; layers: readonly SbomLayer[] }[]>;
}

export interface AttestContext {
  /** Where the image goes (pushed references), for the statements' subjects. */
  readonly names: readonly string[];
  readonly provenance: Omit<ProvenanceInput, "materials">;
  readonly materials: MaterialSet;
  readonly sourceDateEpoch?: number;
  readonly signal?: AbortSignal;
  readonly onWarning?: (message: string) => void;
}

/** The statements of one image. */
export async function statementsFor(t: AttestTarget, opts: AttestOptions, ctx: AttestContext): Promise<EncodedStatement[]> {
  const platform = formatPlatform(t.platform);
  const subject = subjectsFor(t.digest, ctx.names, platform);
  const out: EncodedStatement[] = [];
  if (opts.provenance) {
    const input: ProvenanceInput = { ...ctx.provenance, materials: ctx.materials.forPlatform(t.platform) };
    out.push(provenanceStatement(subject, input, { mode: opts.provenance.mode, version: opts.provenance.version ?? "v1" }));
  }
  if (opts.sbom) {
    const scans = [{ name: ctx.names[0] ?? `sha256:${t.digest.slice(7, 19)}`, layers: await t.sbomLayers(), purl: subject[0]?.name }, ...((await t.extraScans?.()) ?? [])];
    for (const scan of scans) {
      const sbom = await generateSbom(scan.layers, {
        name: scan.name,
        sourceDateEpoch: ctx.sourceDateEpoch,
        namespaceSeed: [t.digest, scan.name],
        ...("purl" in scan && scan.purl ? { imagePurl: scan.purl } : {}),
        signal: ctx.signal,
        onWarning: ctx.onWarning,
      });
      out.push(encodeStatement(SPDX_PREDICATE_TYPE, subject, sbom.document));
    }
  }
  return out;
}

/** The attestation manifest of each image (in the images' order), when anything is to be attached. */
export async function attestImages(targets: readonly AttestTarget[], opts: AttestOptions, ctx: AttestContext): Promise<AttestationManifest[]> {
  if (!opts.provenance && !opts.sbom) return [];
  const out: AttestationManifest[] = [];
  for (const t of targets) out.push(attestationManifest(t.digest, await statementsFor(t, opts, ctx)));
  return out;
}
