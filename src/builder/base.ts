/**
 * A stage's starting state: scratch, another stage's result, or a registry image
 * (its config and layers; the layers stay in the registry until a step needs the
 * filesystem or the image is pushed elsewhere). base-resolve.ts finds the image, in
 * an earlier build's record or in its registry.
 */
import type { Image } from "../oci/image.js";
import { normalizePlatform, type Platform } from "../oci/platform.js";
import type { ImageReference } from "../oci/reference.js";
import { emptyState, type LayerRecord, type LayerSource, type StageState } from "./stage-state.js";

/** The state a stage on `image` (the platform's image of registry reference `ref`) starts from. */
export function imageState(ref: ImageReference, image: Image, signal?: AbortSignal): Promise<StageState> {
  return stateOfImage(image, `${ref.familiar}@${image.manifest.digest}`, { kind: "registry", ref: ref.name }, signal);
}

/** The starting state an image gives (its config, layers and history), its layers read from `source`. */
export async function stateOfImage(image: Image, baseName: string, source: LayerSource, signal?: AbortSignal): Promise<StageState> {
  const cfg = (await image.config(signal)).parsed;
  const records: LayerRecord[] = (await image.layers(signal)).map((l) => ({ descriptor: l.descriptor, diffId: l.diffId, source }));
  return {
    // Normalised as BuildKit writes it: an arm64 base's "v8" is not carried into the built image.
    platform: normalizePlatform({ os: cfg.os, architecture: cfg.architecture, ...(cfg.variant ? { variant: cfg.variant } : {}) }),
    config: { ...(cfg.config ?? {}) },
    layers: records,
    history: [...(cfg.history ?? [])],
    args: {},
    baseConfig: cfg,
    baseName,
  };
}

export function scratchState(platform: Platform): StageState {
  return emptyState(platform);
}
