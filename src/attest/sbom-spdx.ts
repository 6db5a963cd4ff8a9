/**
 * The SPDX 2.3 JSON document for an image's packages, and the in-toto
 * statement that carries it as BuildKit attaches SBOMs (predicate type
 * `https://spdx.dev/Document`).
 *
 * The document DESCRIBES one root package (the image, or the stage scanned),
 * which CONTAINS every package found. Each package names the layer that added
 * it in an annotation (`layerDiffID: sha256:...`, and BuildKit's `layerID:`
 * with the blob digest when that is known) and the file it was found in in its
 * sourceInfo. Nothing depends on the clock or on chance unless asked: the
 * namespace is derived from the name, the layers and the caller's seed (the
 * image digest), and `created` from SOURCE_DATE_EPOCH when given.
 */
import { createHash } from "node:crypto";
import type { SbomLayerRef, SbomPackage } from "./sbom-model.js";

export const SPDX_PREDICATE_TYPE = "https://spdx.dev/Document";
export const IN_TOTO_STATEMENT_V01 = "https://in-toto.io/Statement/v0.1";
export const IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1";
const NOASSERTION = "NOASSERTION";
const ROOT_ID = "SPDXRef-DocumentRoot-Image";

export interface SpdxDocumentOptions {
  /** The document's and the root package's name: the image reference, or the stage's name. */
  name: string;
  /** The document's creation time (SOURCE_DATE_EPOCH for a reproducible build). */
  created: Date;
  /** "ocibuild-<version>", written as `Tool: <tool>`. */
  tool: string;
  /** More inputs for the document namespace (such as the image's manifest digest). */
  namespaceSeed?: readonly string[];
  /** The image's own purl (`pkg:docker/...` or `pkg:oci/...`), on the root package. */
  imagePurl?: string;
}

/** An SPDX 2.3 document in its JSON form (the fields ocibuild writes). */
export interface SpdxDocument {
  spdxVersion: "SPDX-2.3";
  dataLicense: "CC0-1.0";
  SPDXID: "SPDXRef-DOCUMENT";
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[] };
  packages: Array<Record<string, unknown>>;
  hasExtractedLicensingInfos?: Array<{ licenseId: string; name: string; extractedText: string }>;
  relationships: Array<{ spdxElementId: string; relationshipType: string; relatedSpdxElement: string }>;
}

/** SPDX's date form: seconds, UTC, no fraction. */
function spdxDate(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

const idPart = (s: string) => s.replace(/[^A-Za-z0-9.-]+/g, "-").replace(/^-+|-+$/g, "");
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

function layerNote(layer: SbomLayerRef | undefined): string {
  if (layer === undefined) return "layerDiffID: unknown";
  return layer.digest === undefined ? `layerDiffID: ${layer.diffId}` : `layerDiffID: ${layer.diffId}\nlayerID: ${layer.digest}`;
}

function sourceInfo(p: SbomPackage): string {
  const src = p.source === undefined || (p.source.name === p.name && p.source.version === undefined) ? "" : `; built from source package ${p.source.name}${p.source.version ? ` (${p.source.version})` : ""}`;
  return `found in ${p.path}${src}`;
}

function spdxPackage(p: SbomPackage, id: string, layers: readonly SbomLayerRef[], annotation: { date: string; tool: string }): Record<string, unknown> {
  return {
    SPDXID: id,
    name: p.name,
    ...(p.version === undefined ? {} : { versionInfo: p.version }),
    supplier: p.supplier ?? NOASSERTION,
    ...(p.originator === undefined ? {} : { originator: p.originator }),
    downloadLocation: NOASSERTION,
    filesAnalyzed: false,
    sourceInfo: sourceInfo(p),
    licenseConcluded: NOASSERTION,
    licenseDeclared: p.license ?? NOASSERTION,
    copyrightText: NOASSERTION,
    ...(p.homepage !== undefined && /^https?:\/\/\S+$/.test(p.homepage) ? { homepage: p.homepage } : {}),
    externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: p.purl }],
    annotations: [{ annotationDate: annotation.date, annotationType: "OTHER", annotator: `Tool: ${annotation.tool}`, comment: layerNote(layers[p.layer]) }],
  };
}

/** Every LicenseRef used, declared as SPDX asks (ocibuild reads licence names, not texts). */
function extractedLicences(pkgs: readonly SbomPackage[]): NonNullable<SpdxDocument["hasExtractedLicensingInfos"]> {
  const refs = new Set<string>();
  for (const p of pkgs) for (const m of (p.license ?? "").matchAll(/LicenseRef-[A-Za-z0-9.-]+/g)) refs.add(m[0]);
  return [...refs].sort().map((licenseId) => ({
    licenseId,
    name: licenseId.slice("LicenseRef-".length),
    extractedText: `The package metadata names this licence "${licenseId.slice("LicenseRef-".length)}"; its text was not read.`,
  }));
}

/** The SPDX document for `packages`, found in `layers`. */
export function spdxDocument(packages: readonly SbomPackage[], layers: readonly SbomLayerRef[], opts: SpdxDocumentOptions): SpdxDocument {
  const created = spdxDate(opts.created);
  const seed = sha256(JSON.stringify([opts.name, layers.map((l) => l.diffId), opts.namespaceSeed ?? []]));
  const root: Record<string, unknown> = {
    SPDXID: ROOT_ID, name: opts.name, downloadLocation: NOASSERTION, filesAnalyzed: false, licenseConcluded: NOASSERTION,
    licenseDeclared: NOASSERTION, copyrightText: NOASSERTION, primaryPackagePurpose: "CONTAINER",
    ...(opts.imagePurl === undefined ? {} : { externalRefs: [{ referenceCategory: "PACKAGE-MANAGER", referenceType: "purl", referenceLocator: opts.imagePurl }] }),
  };
  const seen = new Set<string>();
  const pkgs: Array<Record<string, unknown>> = [];
  const relationships: SpdxDocument["relationships"] = [{ spdxElementId: "SPDXRef-DOCUMENT", relationshipType: "DESCRIBES", relatedSpdxElement: ROOT_ID }];
  for (const p of packages) {
    const id = `SPDXRef-Package-${p.type}-${idPart(p.name).slice(0, 64)}-${sha256(`${p.purl}\0${p.path}`).slice(0, 16)}`;
    if (seen.has(id)) continue;
    seen.add(id);
    pkgs.push(spdxPackage(p, id, layers, { date: created, tool: opts.tool }));
    relationships.push({ spdxElementId: ROOT_ID, relationshipType: "CONTAINS", relatedSpdxElement: id });
  }
  const extracted = extractedLicences(packages);
  return {
    spdxVersion: "SPDX-2.3",
    dataLicense: "CC0-1.0",
    SPDXID: "SPDXRef-DOCUMENT",
    name: opts.name,
    documentNamespace: `https://spdx.org/spdxdocs/ocibuild/${idPart(opts.name).slice(0, 100) || "image"}-${seed.slice(0, 32)}`,
    creationInfo: { created, creators: [`Tool: ${opts.tool}`] },
    packages: [root, ...pkgs],
    ...(extracted.length === 0 ? {} : { hasExtractedLicensingInfos: extracted }),
    relationships,
  };
}

export interface InTotoSubject {
  /** BuildKit names an image subject by its purl (`pkg:docker/NAME@TAG?platform=...`). */
  name: string;
  digest: Record<string, string>;
}

export interface InTotoStatement<P = unknown> {
  _type: string;
  predicateType: string;
  subject: InTotoSubject[];
  predicate: P;
}

/**
 * The in-toto statement carrying `document`, as BuildKit writes its SBOM
 * attestation: `_type` in-toto Statement v0.1 by default (BuildKit v0.11 to
 * v0.30 write it), or v1 with `statementType: "v1"` (BuildKit v0.31.0 on),
 * predicateType `https://spdx.dev/Document`, and the caller's subjects.
 */
export function sbomStatement(document: SpdxDocument, subjects: readonly InTotoSubject[], opts: { statementType?: "v0.1" | "v1" } = {}): InTotoStatement<SpdxDocument> {
  return {
    _type: opts.statementType === "v1" ? IN_TOTO_STATEMENT_V1 : IN_TOTO_STATEMENT_V01,
    predicateType: SPDX_PREDICATE_TYPE,
    subject: subjects.map((s) => ({ name: s.name, digest: { ...s.digest } })),
    predicate: document,
  };
}
