/**
 * Library operations over registries and OCI layouts: copy an image or a whole
 * index byte for byte (digests preserved, blobs mounted where possible, in
 * parallel with a bound), and inspect a manifest, index or config.
 * A source or destination is a registry reference or "oci:DIR[:tag]". A copy
 * reads the source (sources.ts) and hands what it names to one sink
 * (registry/push.ts or layout-sink.ts).
 */
import { OcibuildError, optionWords } from "../errors.js";
import type { Digest } from "./digest.js";
import { type Artifact, selectEntry, selectImage } from "./image.js";
import { writeLayout } from "./layout-sink.js";
import type { Platform } from "./manifest.js";
import { hostPlatform } from "./platform.js";
import { RegistryClient } from "./registry/client.js";
import { pushArtifact } from "./registry/push.js";
import type { RegistryOptions } from "./registry/types.js";
import { type ImageLocation, openLocation, parseLocation } from "./sources.js";

export { parseLocation, type ImageLocation };

export interface CopyOptions {
  /** Copy every image of an index (the default when neither all nor platform is given). */
  all?: boolean;
  /** Copy only this platform's image out of an index. */
  platform?: Platform;
  client?: RegistryClient;
  registry?: RegistryOptions;
  signal?: AbortSignal;
  /** Ref name for a layout destination given without one (pull uses the source tag). */
  defaultLayoutRef?: string;
}

export interface CopyResult {
  digest: Digest;
  mediaType: string;
  /** Blobs per outcome. */
  blobs: { uploaded: number; mounted: number; exists: number };
  manifests: number;
}

/** Where `a` goes: an OCI layout (named by the destination's tag, else `defaultLayoutRef`), or a registry reference. */
async function writeTo(a: Artifact, to: ImageLocation, client: () => RegistryClient, opts: CopyOptions): Promise<CopyResult> {
  if (to.kind === "layout") {
    const ref = to.ref ?? opts.defaultLayoutRef;
    const tag = ref !== undefined && !ref.startsWith("sha256:") ? ref : undefined;
    const r = await writeLayout(a, to.dir, { tag, limit: client().limit, signal: opts.signal });
    return { digest: r.descriptor.digest, mediaType: r.descriptor.mediaType, blobs: r.blobs, manifests: r.manifests };
  }
  const { ref } = to;
  if (ref.tag === undefined && ref.digest !== undefined && ref.digest !== a.manifest.digest) {
    throw new OcibuildError("DIGEST_MISMATCH", `the destination ${to.text} names digest ${ref.digest} but the image copied is ${a.manifest.digest}`);
  }
  return pushArtifact(client(), a, [ref], { signal: opts.signal });
}

/**
 * Copy `src` to `dst` (registry references or oci:DIR[:tag]) byte for byte: the
 * digests at the destination are the digests at the source.
 */
export async function copyImage(src: string, dst: string, opts: CopyOptions = {}): Promise<CopyResult> {
  if (opts.all && opts.platform) throw new OcibuildError("USAGE_BAD_VALUE", `${optionWords("all")} and ${optionWords("platform")} cannot be used together`);
  const from = parseLocation(src);
  const to = parseLocation(dst);
  let own: RegistryClient | undefined;
  const client = () => (opts.client ?? (own ??= new RegistryClient(opts.registry)));
  try {
    let a = await openLocation(from, client, opts.signal);
    if (a.kind === "index" && opts.platform) a = await selectEntry(a, opts.platform, from.text).open(opts.signal);
    return await writeTo(a, to, client, opts);
  } finally {
    await own?.close();
  }
}

export interface InspectOptions {
  platform?: Platform;
  /** The exact bytes, as stored. */
  raw?: boolean;
  /** The image config instead of the manifest. */
  config?: boolean;
  client?: RegistryClient;
  registry?: RegistryOptions;
  signal?: AbortSignal;
}

export interface InspectResult {
  kind: "manifest" | "index" | "config";
  /** Digest and media type of what `bytes` holds. */
  digest: Digest;
  mediaType: string;
  bytes: Uint8Array;
  /** The parsed JSON of `bytes`. */
  value: unknown;
}

/**
 * The manifest or index `ref` names (with `platform`, the image picked from an
 * index), or with `config` the image config (platform defaulting to this host's).
 */
export async function inspect(ref: string, opts: InspectOptions = {}): Promise<InspectResult> {
  let own: RegistryClient | undefined;
  const client = () => (opts.client ?? (own ??= new RegistryClient(opts.registry)));
  try {
    const top = await openLocation(parseLocation(ref), client, opts.signal);
    const platform = opts.platform ?? (opts.config ? hostPlatform() : undefined);
    const m = platform ? await selectImage(top, platform, ref, opts.signal) : top;
    if (opts.config) {
      if (m.kind !== "image") throw new OcibuildError("MANIFEST_INVALID", `${ref} is not an image`);
      const cfg = await m.config(opts.signal);
      return { kind: "config", digest: cfg.digest, mediaType: cfg.mediaType, bytes: cfg.bytes, value: cfg.parsed };
    }
    const kind = m.kind === "image" ? "manifest" : "index";
    return { kind, digest: m.manifest.digest, mediaType: m.manifest.mediaType, bytes: m.manifest.bytes, value: m.manifest.parsed };
  } finally {
    await own?.close();
  }
}
