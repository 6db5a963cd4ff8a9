/**
 * What provenance records of a build's request, read from its options and plan:
 * the Dockerfile's name and digest, the build arguments (redacted later where they
 * look secret), the target and platforms, the options that change the result, and
 * the ids (never the values) of its secrets and ssh agents.
 */
import { createHash } from "node:crypto";
import type { ProvenanceInput } from "../attest/provenance.js";
import { formatPlatform } from "../oci/platform.js";
import type { BuildOptions, BuildPlan } from "./build.js";

export type RequestProvenance = Omit<ProvenanceInput, "materials" | "builderVersion" | "builderPlatform" | "steps">;

/** The options that change what is built, as provenance's request records them. */
function recordedOptions(opts: BuildOptions): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (opts.labels && Object.keys(opts.labels).length) out.labels = { ...opts.labels };
  if (opts.noCache) out.noCache = true;
  if (opts.network) out.network = opts.network;
  if (opts.allow?.length) out.allow = [...opts.allow];
  if (opts.annotations?.length) out.annotations = opts.annotations.map((a) => `${a.levels.join(",")}${a.platform ? `[${formatPlatform(a.platform)}]` : ""}:${a.key}=${a.value}`);
  return out;
}

export function provenanceOf(opts: BuildOptions, plan: BuildPlan): RequestProvenance {
  return {
    dockerfile: { name: plan.df.name, sha256: createHash("sha256").update(plan.df.text).digest("hex") },
    ...(plan.contextSource ? { context: plan.contextSource } : {}),
    buildArgs: plan.buildArgs,
    ...(opts.target ? { target: opts.target } : {}),
    platforms: plan.targets.map(formatPlatform),
    options: recordedOptions(opts),
    secretIds: (opts.secrets ?? []).map((s) => s.id),
    sshIds: (opts.ssh ?? []).map((s) => s.id),
    ...(opts.sourceDateEpoch !== undefined ? { sourceDateEpoch: opts.sourceDateEpoch } : {}),
  };
}
