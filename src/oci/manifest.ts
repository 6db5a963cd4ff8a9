/**
 * The OCI image model: descriptors, manifests, indexes and configs, validated at
 * the boundary. A manifest or config is written once as bytes; its digest is the
 * digest of those exact bytes (`Blob`), never of re-serialised JSON.
 */
import { OcibuildError } from "../errors.js";
import { type DiffID, type Digest, digestOf, isDigestString } from "./digest.js";
import { MediaType, isIndexMediaType, isManifestMediaType } from "./media-types.js";

import type { Platform } from "./platform.js";

export type { Platform };

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface HealthConfig {
  Test?: string[];
  Interval?: number;
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** The `config` part of an image config (Docker's container config subset that OCI keeps, plus Docker extras). */
export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  ArgsEscaped?: boolean;
  /** Docker extensions, kept so nothing is silently dropped. */
  Healthcheck?: HealthConfig;
  OnBuild?: string[] | null;
  Shell?: string[];
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
  config?: ContainerConfig;
  rootfs: { type: "layers"; diff_ids: DiffID[] };
  history?: HistoryEntry[];
}

/** Bytes plus what they are. The digest is of `bytes`. */
export interface Blob<T = unknown> {
  readonly mediaType: string;
  readonly bytes: Uint8Array;
  readonly digest: Digest;
  readonly parsed: T;
}

export function descriptorOf(blob: Blob, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.bytes.length, ...extra };
}

/** Serialise once; the result's digest is the digest of these bytes. */
export function encodeJson<T>(mediaType: string, value: T): Blob<T> {
  const bytes = new TextEncoder().encode(JSON.stringify(value));
  return { mediaType, bytes, digest: digestOf(bytes), parsed: value };
}

function fail(what: string, msg: string): never {
  throw new OcibuildError("MANIFEST_INVALID", `invalid ${what}: ${msg}`);
}

function checkDescriptor(d: unknown, what: string): Descriptor {
  if (typeof d !== "object" || d === null) fail(what, "descriptor is not an object");
  const o = d as Record<string, unknown>;
  if (typeof o.mediaType !== "string" || o.mediaType === "") fail(what, "descriptor has no mediaType");
  if (typeof o.digest !== "string" || !isDigestString(o.digest)) fail(what, `descriptor digest ${JSON.stringify(o.digest)} is not a valid digest`);
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) fail(what, "descriptor size is not a non-negative integer");
  if (o.platform !== undefined) {
    const p = o.platform as Record<string, unknown>;
    if (typeof p !== "object" || p === null || typeof p.os !== "string" || typeof p.architecture !== "string") fail(what, "descriptor platform lacks os/architecture");
  }
  return o as unknown as Descriptor;
}

function parseJsonBytes(bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new OcibuildError("MANIFEST_INVALID", `invalid ${what}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) fail(what, "not a JSON object");
  return v as Record<string, unknown>;
}

export type AnyManifest = { kind: "manifest"; blob: Blob<ImageManifest> } | { kind: "index"; blob: Blob<ImageIndex> };

/**
 * Parse manifest bytes received from a registry or a layout. `mediaType` is the
 * Content-Type (or descriptor media type) when known; the document's own field wins
 * when present.
 */
export function parseManifest(bytes: Uint8Array, mediaType?: string): AnyManifest {
  const o = parseJsonBytes(bytes, "manifest");
  if (o.schemaVersion !== 2) fail("manifest", `schemaVersion ${JSON.stringify(o.schemaVersion)} is not supported (need 2)`);
  const mt = typeof o.mediaType === "string" ? o.mediaType : mediaType;
  const digest = digestOf(bytes);
  const isIndex = isIndexMediaType(mt) || (mt === undefined || !isManifestMediaType(mt)) && Array.isArray(o.manifests);
  if (isIndex) {
    if (!Array.isArray(o.manifests)) fail("index", "manifests is not an array");
    (o.manifests as unknown[]).forEach((d, i) => checkDescriptor(d, `index entry ${i}`));
    return { kind: "index", blob: { mediaType: mt ?? MediaType.OCI_INDEX, bytes, digest, parsed: o as unknown as ImageIndex } };
  }
  if (mt !== undefined && !isManifestMediaType(mt)) fail("manifest", `unsupported media type ${mt}`);
  checkDescriptor(o.config, "manifest config");
  if (!Array.isArray(o.layers)) fail("manifest", "layers is not an array");
  (o.layers as unknown[]).forEach((d, i) => checkDescriptor(d, `manifest layer ${i}`));
  return { kind: "manifest", blob: { mediaType: mt ?? MediaType.OCI_MANIFEST, bytes, digest, parsed: o as unknown as ImageManifest } };
}

export function parseImageConfig(bytes: Uint8Array, mediaType: string = MediaType.OCI_CONFIG): Blob<ImageConfig> {
  const o = parseJsonBytes(bytes, "image config");
  if (typeof o.architecture !== "string" || typeof o.os !== "string") fail("image config", "architecture and os are required");
  const rootfs = o.rootfs as Record<string, unknown> | undefined;
  if (!rootfs || rootfs.type !== "layers" || !Array.isArray(rootfs.diff_ids)) fail("image config", "rootfs.diff_ids is required");
  for (const d of rootfs.diff_ids as unknown[]) {
    if (typeof d !== "string" || !isDigestString(d)) fail("image config", `diff_id ${JSON.stringify(d)} is not a valid digest`);
  }
  return { mediaType, bytes, digest: digestOf(bytes), parsed: o as unknown as ImageConfig };
}
