/** Short human summaries of what `verifyImage` found: signatures, provenance and SBOM. */
import type { Statement, VerifyResult } from "./verify.js";

const SPDX = "https://spdx.dev/Document";

interface ProvenanceView {
  buildDefinition?: { resolvedDependencies?: { uri: string }[]; internalParameters?: { buildConfig?: { steps?: unknown[] } } };
  runDetails?: { builder?: { id?: string; version?: Record<string, string> }; metadata?: { ocibuild_mode?: string } };
  builder?: { id?: string };
  materials?: { uri: string }[];
  buildConfig?: { steps?: unknown[] };
}

function provenanceLine(s: Statement): string {
  const p = (s.predicate ?? {}) as ProvenanceView;
  const builder = p.runDetails?.builder?.id ?? p.builder?.id ?? "unknown builder";
  const version = Object.entries(p.runDetails?.builder?.version ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
  const materials = (p.buildDefinition?.resolvedDependencies ?? p.materials ?? []).map((m) => m.uri);
  const steps = p.buildDefinition?.internalParameters?.buildConfig?.steps ?? p.buildConfig?.steps;
  const parts = [`builder ${builder}${version ? ` (${version})` : ""}`, `${materials.length} material(s)${materials.length ? `: ${materials.join(", ")}` : ""}`];
  if (steps) parts.push(`${steps.length} step(s) recorded`);
  return `provenance ${s.predicateType} [${s.source}]: ${parts.join("; ")}`;
}

function sbomLine(s: Statement): string {
  const doc = (s.predicate ?? {}) as { spdxVersion?: string; packages?: unknown[] };
  return `sbom ${doc.spdxVersion ?? "SPDX"} [${s.source}]: ${doc.packages?.length ?? 0} package(s)`;
}

function statementLine(s: Statement): string {
  if (s.predicateType.startsWith("https://slsa.dev/provenance/")) return provenanceLine(s);
  if (s.predicateType === SPDX) return sbomLine(s);
  return `attestation ${s.predicateType} [${s.source}]`;
}

export function summariseVerification(r: VerifyResult, keySource: string): string {
  const lines = [`Verified ${r.reference}@${r.digest} with ${keySource}`];
  for (const m of r.manifests) {
    lines.push(`  ${m.platform ? `${m.platform} ` : ""}${m.digest}: signed for ${m.signedReference}`);
    for (const s of m.statements) lines.push(`    ${statementLine(s)}`);
    if (m.statements.length === 0) lines.push("    no provenance or SBOM attached");
  }
  return `${lines.join("\n")}\n`;
}
