/**
 * The registry cache store (kaniko's --cache-repo): each entry is an OCI artifact
 * in one repository, tagged with its key: the record as the config blob
 * (application/vnd.ocibuild.cache.record.v1+json) and the step's layer (or the
 * empty descriptor) as its only layer. The latest entry of a step is also tagged
 * `slot-<slot>` so misses can be explained on another machine. Layers stay in the
 * registry until a build needs their bytes; pushing to the same registry mounts them.
 */
import { Readable } from "node:stream";
import { OcibuildError } from "../errors.js";
import type { OciLayout } from "../oci/layout.js";
import { type Descriptor, encodeJson, descriptorOf, type ImageManifest } from "../oci/manifest.js";
import { MediaType } from "../oci/media-types.js";
import { type ImageReference, withTag } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { type CacheRecord, type CacheStore, type LookupResult, expired, validRecord } from "./store.js";

export const CACHE_RECORD_MEDIA_TYPE = "application/vnd.ocibuild.cache.record.v1+json";
export const CACHE_ARTIFACT_TYPE = "application/vnd.ocibuild.cache.v1";
const EMPTY = encodeJson(MediaType.OCI_EMPTY, {});

export class RegistryCacheStore implements CacheStore {
  readonly name = "registry";
  constructor(
    readonly repo: ImageReference,
    private readonly client: RegistryClient,
    private readonly content: OciLayout,
    private readonly ttlSeconds?: number,
  ) {}

  private async readRecord(tag: string, signal?: AbortSignal): Promise<{ rec: unknown; manifest: ImageManifest } | undefined> {
    let m;
    try {
      m = await this.client.getManifest(withTag(this.repo, tag), { signal });
    } catch (e) {
      // A 404 (the registry's MANIFEST_UNKNOWN or NAME_UNKNOWN) is always REGISTRY_NOT_FOUND (see httpError).
      if (e instanceof OcibuildError && e.code === "REGISTRY_NOT_FOUND") return undefined;
      throw e;
    }
    if (m.kind !== "manifest" || m.blob.parsed.config.mediaType !== CACHE_RECORD_MEDIA_TYPE) return { rec: undefined, manifest: m.blob.parsed as ImageManifest };
    const bytes = await this.client.getBlobBytes(this.repo, m.blob.parsed.config.digest, { size: m.blob.parsed.config.size, signal });
    try {
      return { rec: JSON.parse(Buffer.from(bytes).toString("utf8")), manifest: m.blob.parsed };
    } catch {
      return { rec: undefined, manifest: m.blob.parsed };
    }
  }

  async get(key: string, signal?: AbortSignal): Promise<LookupResult> {
    const found = await this.readRecord(key, signal);
    if (!found) return {};
    const { rec, manifest } = found;
    if (!validRecord(rec, key)) return { corrupt: `registry cache entry ${this.repo.name}:${key.slice(0, 12)} does not match its key` };
    if (expired(rec, this.ttlSeconds)) return {};
    if (rec.layer) {
      const l = manifest.layers[0];
      if (!l || l.digest !== rec.layer.digest || l.size !== rec.layer.size) {
        return { corrupt: `registry cache entry ${this.repo.name}:${key.slice(0, 12)} names a different layer than its record` };
      }
      if (!(await this.client.blobExists(this.repo, rec.layer.digest, signal))) return {};
    }
    return { hit: { record: rec, source: { kind: "registry", ref: this.repo.name }, store: this.name } };
  }

  async previous(slot: string, signal?: AbortSignal): Promise<CacheRecord | undefined> {
    const found = await this.readRecord(`slot-${slot}`, signal);
    const rec = found?.rec as CacheRecord | undefined;
    return rec && validRecord(rec, rec.key) ? rec : undefined;
  }

  async put(record: CacheRecord, signal?: AbortSignal): Promise<void> {
    const config = encodeJson(CACHE_RECORD_MEDIA_TYPE, record);
    let layer: Descriptor;
    if (record.layer) {
      layer = { mediaType: record.layer.mediaType, digest: record.layer.digest, size: record.layer.size };
      if (!(await this.content.hasBlob(record.layer.digest))) {
        // A hit from elsewhere whose bytes we never pulled: it must already be in the registry.
        if (!(await this.client.blobExists(this.repo, record.layer.digest, signal))) return;
      } else {
        const digest = record.layer.digest;
        await this.client.pushBlob(this.repo, layer, (s) => this.content.readBlob(digest, s), { signal });
      }
    } else {
      layer = descriptorOf(EMPTY);
      await this.client.pushBlob(this.repo, layer, () => Readable.from([Buffer.from(EMPTY.bytes)]), { signal });
    }
    await this.client.pushBlob(this.repo, descriptorOf(config), () => Readable.from([Buffer.from(config.bytes)]), { signal });
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType: CACHE_ARTIFACT_TYPE,
      config: descriptorOf(config),
      layers: [layer],
      annotations: { "org.opencontainers.image.created": record.created },
    };
    const blob = encodeJson(MediaType.OCI_MANIFEST, manifest);
    await this.client.putManifest(withTag(this.repo, record.key), blob, signal);
    await this.client.putManifest(withTag(this.repo, `slot-${record.slot}`), blob, signal);
  }
}
