/**
 * A stage's starting state: scratch, another stage's result, or a registry image
 * (its config and layers; the layers stay in the registry until a step needs the
 * filesystem or the image is pushed elsewhere).
 */
import { OcibuildError } from "../errors.js";
import { parseDiffID } from "../oci/digest.js";
import { normalizePlatform, type Platform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { emptyState, type LayerRecord, type StageState } from "./stage-state.js";

export async function imageState(refText: string, platform: Platform, registry: RegistryClient, signal?: AbortSignal): Promise<StageState> {
  const ref = parseReference(refText);
  const { manifest, config } = await registry.getImage(ref, { platform, signal });
  const layers = manifest.parsed.layers;
  const diffIds = config.parsed.rootfs.diff_ids;
  if (layers.length !== diffIds.length) {
    throw new OcibuildError("MANIFEST_INVALID", `image ${ref.familiar} has ${layers.length} layers but its config lists ${diffIds.length} diff IDs`);
  }
  const records: LayerRecord[] = layers.map((d, i) => ({
    descriptor: d,
    diffId: parseDiffID(diffIds[i]!),
    source: { kind: "registry", ref: ref.name },
  }));
  const cfg = config.parsed;
  return {
    // Normalised as BuildKit writes it: an arm64 base's "v8" is not carried into the built image.
    platform: normalizePlatform({ os: cfg.os, architecture: cfg.architecture, ...(cfg.variant ? { variant: cfg.variant } : {}) }),
    config: { ...(cfg.config ?? {}) },
    layers: records,
    history: [...(cfg.history ?? [])],
    args: {},
    baseConfig: cfg,
    baseName: `${ref.familiar}@${manifest.digest}`,
  };
}

export function scratchState(platform: Platform): StageState {
  return emptyState(platform);
}
