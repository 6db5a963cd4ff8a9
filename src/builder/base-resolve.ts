/**
 * Resolving the build's base images (FROM, COPY --from=IMAGE) as docker does: a tag
 * an earlier build with this cache directory resolved within the cache TTL is reused
 * from its record, with no registry round trip (a build works offline); with the pull
 * option every tag is resolved in its registry again and its record rewritten. A
 * reference pinned by digest names content that cannot change: once recorded, it is
 * never asked for again. Each image is resolved once per build, whatever asks.
 *
 * A record (CACHE/bases/HEX.json, written atomically) holds the platform's manifest
 * and config bytes, keyed by reference, platform and the registries a pull would try
 * (mirrors, --registry-map), so another platform or mirror setting never shares one.
 * Its bytes are checked against their digests when read; a record that fails is
 * ignored and the registry asked.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { StagePlan } from "../dockerfile/index.js";
import { writeFileAtomic } from "../fs-atomic.js";
import { type Image, readerImage, selectImage } from "../oci/image.js";
import { parseImageConfig, parseManifest, type Blob, type ImageConfig, type ImageManifest } from "../oci/manifest.js";
import { formatPlatform, type Platform } from "../oci/platform.js";
import { parseReference, type ImageReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { openRegistry, registryReader } from "../oci/sources.js";
import { imageState } from "./base.js";
import type { StageState } from "./stage-state.js";
import type { NamedContexts } from "./named-contexts.js";
import type { OciLayout } from "../oci/layout.js";

export interface ResolvedBase {
  state: StageState;
  /** "cache": an earlier build's record, no registry asked; "registry": resolved in its registry by this build. */
  resolved: "cache" | "registry";
}

interface BaseRecord {
  v: 1;
  reference: string;
  platform: string;
  /** When the registry was asked, in milliseconds since the epoch. */
  resolvedAt: number;
  manifest: { mediaType: string; data: string };
  config: { mediaType: string; data: string };
}

export interface BaseResolverOptions {
  /** Where the records are (CACHE/bases). */
  dir: string;
  registry: RegistryClient;
  /** Resolve every tag in its registry, records or not (docker's --pull). */
  pull: boolean;
  /** A tag's record older than this is not used. */
  ttlSeconds: number;
  /** The build's named contexts: a FROM or --from of a context's name is its image, never a registry's. */
  named?: NamedContexts;
  /** Where a named oci-layout image's blobs are copied to. */
  content?: OciLayout;
  signal?: AbortSignal;
}

/** How a registry image is known within a build: its reference as written, and the platform. */
function imageKey(ref: string, platform: Platform): string {
  return `${ref}|${formatPlatform(platform)}`;
}

export class BaseResolver {
  /** This build's resolutions (some started before the stages: prefetch), by imageKey. */
  private readonly memo = new Map<string, Promise<ResolvedBase>>();

  constructor(private readonly o: BaseResolverOptions) {}

  /**
   * The image `ref` names for `platform`, resolved once per build: stages on the same
   * base share one resolution and see the same digest even if the tag moves meanwhile.
   * The state is shared: callers copy it before changing it.
   */
  resolve(ref: string, platform: Platform): Promise<ResolvedBase> {
    const key = imageKey(ref, platform);
    let p = this.memo.get(key);
    if (!p) {
      const { named, registry, content, signal } = this.o;
      const fromContext = named && content ? named.image(ref, platform, { registry, content, signal }) : undefined;
      p = fromContext ? fromContext.then((state): ResolvedBase => ({ state, resolved: "registry" })) : this.lookup(parseReference(ref), platform);
      // Awaited by a stage; a build that fails before then must not report it unhandled.
      p.catch(() => {});
      this.memo.set(key, p);
    }
    return p;
  }

  /** Start resolving the registry base of every stage the plans build (before the stages start, while the rest is set up). */
  prefetch(plans: readonly { plan: StagePlan; target: Platform }[]): void {
    for (const { plan, target } of plans) {
      for (const i of plan.order) {
        const stage = plan.stages[i]!;
        // A named context's image is resolved when its stage asks; a stage one replaces never runs.
        if (this.o.named?.has(stage.base) || this.o.named?.has(stage.name)) continue;
        if (stage.baseStage === undefined && stage.base.toLowerCase() !== "scratch") void this.resolve(stage.base, stage.platform ?? target);
      }
    }
  }

  private async lookup(ref: ImageReference, platform: Platform): Promise<ResolvedBase> {
    const { registry, signal } = this.o;
    const path = this.recordPath(ref, platform);
    const pinned = ref.digest !== undefined;
    if (pinned || !this.o.pull) {
      const recorded = await this.readRecord(path, ref, platform);
      if (recorded && (pinned || Date.now() - recorded.resolvedAt < this.o.ttlSeconds * 1000)) {
        return { state: await imageState(ref, recorded.image, signal), resolved: "cache" };
      }
    }
    const image = await selectImage(await openRegistry(registry, ref, ref.familiar, signal), platform, ref.familiar, signal);
    const config = await image.config(signal);
    // A record is a shortcut: one that cannot be written only means the registry is asked next time.
    await this.writeRecord(path, ref, platform, image.manifest, config).catch(() => {});
    return { state: await imageState(ref, image, signal), resolved: "registry" };
  }

  private recordPath(ref: ImageReference, platform: Platform): string {
    const key = JSON.stringify([ref.toString(), formatPlatform(platform), this.o.registry.pullRegistries(ref)]);
    return join(this.o.dir, `${createHash("sha256").update(key).digest("hex")}.json`);
  }

  /** The recorded image (its layers read from `ref`'s registry when needed), if the record is there and sound. */
  private async readRecord(path: string, ref: ImageReference, platform: Platform): Promise<{ image: Image; resolvedAt: number } | undefined> {
    const text = await readFile(path, { encoding: "utf8", signal: this.o.signal }).catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      const rec = JSON.parse(text) as BaseRecord;
      if (rec.v !== 1 || rec.reference !== ref.toString() || rec.platform !== formatPlatform(platform) || typeof rec.resolvedAt !== "number") return undefined;
      const manifest = parseManifest(Buffer.from(rec.manifest.data, "base64"), rec.manifest.mediaType);
      const config = parseImageConfig(Buffer.from(rec.config.data, "base64"), rec.config.mediaType);
      if (manifest.kind !== "manifest" || manifest.blob.parsed.config.digest !== config.digest) return undefined;
      const reader = { ...registryReader(this.o.registry, ref, ref.familiar), bytes: async () => config.bytes };
      return { image: readerImage(reader, manifest.blob, platform), resolvedAt: rec.resolvedAt };
    } catch {
      return undefined;
    }
  }

  private async writeRecord(path: string, ref: ImageReference, platform: Platform, manifest: Blob<ImageManifest>, config: Blob<ImageConfig>): Promise<void> {
    const rec: BaseRecord = {
      v: 1,
      reference: ref.toString(),
      platform: formatPlatform(platform),
      resolvedAt: Date.now(),
      manifest: { mediaType: manifest.mediaType, data: Buffer.from(manifest.bytes).toString("base64") },
      config: { mediaType: config.mediaType, data: Buffer.from(config.bytes).toString("base64") },
    };
    await writeFileAtomic(path, `${JSON.stringify(rec)}\n`, { makeParent: true, signal: this.o.signal });
  }
}
