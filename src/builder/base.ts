/**
 * A stage's starting state: scratch, another stage's result, or a registry image
 * (its config and layers; the layers stay in the registry until a step needs the
 * filesystem or the image is pushed elsewhere).
 */
import { selectImage } from "../oci/image.js";
import { openRegistry } from "../oci/sources.js";
import { normalizePlatform, type Platform } from "../oci/platform.js";
import { parseReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { emptyState, type LayerRecord, type StageState } from "./stage-state.js";

export async function imageState(refText: string, platform: Platform, registry: RegistryClient, signal?: AbortSignal): Promise<StageState> {
  const ref = parseReference(refText);
  const image = await selectImage(await openRegistry(registry, ref, ref.familiar, signal), platform, ref.familiar, signal);
  const config = await image.config(signal);
  const records: LayerRecord[] = (await image.layers(signal)).map((l) => ({
    descriptor: l.descriptor,
    diffId: l.diffId,
    source: { kind: "registry", ref: ref.name },
  }));
  const manifest = image.manifest;
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
