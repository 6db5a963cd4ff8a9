/**
 * Library operations over registries and OCI layouts: copy an image or a whole
 * index byte for byte (digests preserved, blobs mounted where possible, in
 * parallel with a bound), and inspect a manifest, index or config.
 * A source or destination is a registry reference or "oci:DIR[:tag]".
 */
import { OcibuildError } from "../errors.js";
import type { Digest } from "./digest.js";
import { OciLayout, parseLayoutRef } from "./layout.js";
import { type AnyManifest, type Blob, type Descriptor, type ImageManifest, type Platform, parseImageConfig, parseManifest } from "./manifest.js";
import { MediaType } from "./media-types.js";
import { type ImageReference, parseReference, parseReferenceNoDefault, withDigest } from "./reference.js";
import { RegistryClient } from "./registry/client.js";
import { hostPlatform, selectPlatform } from "./platform.js";
import type { RegistryOptions } from "./registry/types.js";

export type ImageLocation = { kind: "layout"; dir: string; ref?: string; text: string } | { kind: "registry"; ref: ImageReference; text: string };

/** "oci:DIR[:tag]" or a registry reference ("docker://" prefix accepted, as skopeo writes it). */
export function parseLocation(s: string, opts: { defaultTag?: boolean } = {}): ImageLocation {
  if (s.startsWith("oci:")) {
    const { dir, ref } = parseLayoutRef(s);
    return ref === undefined ? { kind: "layout", dir, text: s } : { kind: "layout", dir, ref, text: s };
  }
  const bare = s.startsWith("docker://") ? s.slice("docker://".length) : s;
  const ref = opts.defaultTag === false ? parseReferenceNoDefault(bare) : parseReference(bare);
  return { kind: "registry", ref, text: s };
}

/** Where images are read from. */
interface Source {
  text: string;
  root(signal?: AbortSignal): Promise<AnyManifest>;
  manifest(desc: Descriptor, signal?: AbortSignal): Promise<AnyManifest>;
  openBlob(desc: Descriptor, signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
  blobBytes(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
  /** The registry repository, for cross-repository mounts. */
  registryRef?: ImageReference;
}

function registrySource(client: RegistryClient, ref: ImageReference, text: string): Source {
  return {
    text,
    registryRef: ref,
    root: (signal) => client.getManifest(ref, { signal }),
    manifest: (desc, signal) => client.getManifest(withDigest(ref, desc.digest), { signal }),
    openBlob: (desc, signal) => client.getBlob(ref, desc.digest, { size: desc.size, signal }),
    blobBytes: (desc, signal) => client.getBlobBytes(ref, desc.digest, { size: desc.size, signal }),
  };
}

async function layoutSource(dir: string, ref: string | undefined, text: string, signal?: AbortSignal): Promise<Source> {
  const layout = await OciLayout.open(dir, signal);
  const read = async (desc: Descriptor, s?: AbortSignal) => parseManifest(await layout.readBlobBytes(desc.digest, s), desc.mediaType);
  return {
    text,
    root: async (s) => {
      const desc = await layout.resolve(ref, s);
      if (!desc) {
        throw new OcibuildError("LAYOUT_REF_NOT_FOUND", ref === undefined ? `the OCI layout ${dir} holds no image` : `the OCI layout ${dir} has no image named "${ref}"`, {
          file: dir,
        });
      }
      return read(desc, s);
    },
    manifest: read,
    openBlob: async (desc, s) => layout.readBlob(desc.digest, s),
    blobBytes: (desc, s) => layout.readBlobBytes(desc.digest, s),
  };
}

/** Where images are written. */
interface Dest {
  text: string;
  putBlob(desc: Descriptor, src: Source, signal?: AbortSignal): Promise<"exists" | "mounted" | "uploaded">;
  /** A manifest that is part of the copy (by digest). */
  putChild(blob: Blob, signal?: AbortSignal): Promise<void>;
  /** The manifest or index the destination names (by tag, or by digest). */
  putRoot(blob: Blob, signal?: AbortSignal): Promise<void>;
}

function registryDest(client: RegistryClient, ref: ImageReference, text: string): Dest {
  return {
    text,
    putBlob: (desc, src, signal) => {
      const mountFrom = src.registryRef && src.registryRef.registry === ref.registry && src.registryRef.repository !== ref.repository ? [src.registryRef.repository] : [];
      return client.pushBlob(ref, desc, (s) => src.openBlob(desc, s ?? signal), { mountFrom, signal });
    },
    putChild: async (blob, signal) => {
      await client.putManifest(withDigest(ref, blob.digest), blob, signal);
    },
    putRoot: async (blob, signal) => {
      if (ref.tag === undefined && ref.digest !== undefined && ref.digest !== blob.digest) {
        throw new OcibuildError("DIGEST_MISMATCH", `the destination ${text} names digest ${ref.digest} but the image copied is ${blob.digest}`);
      }
      await client.putManifest(ref.tag !== undefined ? ref : withDigest(ref, blob.digest), blob, signal);
    },
  };
}

async function layoutDest(dir: string, refName: string | undefined, text: string, signal?: AbortSignal): Promise<Dest> {
  const layout = await OciLayout.create(dir, signal);
  return {
    text,
    putBlob: async (desc, src, s) => {
      if (await layout.hasBlob(desc.digest)) return "exists";
      // Both sources (a registry's getBlob, a layout's readBlob) verify the digest as they stream.
      await layout.writeBlob(await src.openBlob(desc, s), { digest: desc.digest, size: desc.size }, s, { sourceVerified: true });
      return "uploaded";
    },
    putChild: async (blob, s) => {
      await layout.writeBlob(blob.bytes, { digest: blob.digest, size: blob.bytes.length }, s);
    },
    putRoot: async (blob, s) => {
      await layout.writeBlob(blob.bytes, { digest: blob.digest, size: blob.bytes.length }, s);
      const name = refName !== undefined && !refName.startsWith("sha256:") ? refName : undefined;
      await layout.addManifest({ mediaType: blob.mediaType, digest: blob.digest, size: blob.bytes.length }, name, s);
    },
  };
}

function isForeign(d: Descriptor): boolean {
  return (d.urls?.length ?? 0) > 0 && (d.mediaType === MediaType.DOCKER_FOREIGN_LAYER_GZIP || d.mediaType.includes(".nondistributable."));
}

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

async function openSource(loc: ImageLocation, client: () => RegistryClient, signal?: AbortSignal): Promise<Source> {
  return loc.kind === "layout" ? layoutSource(loc.dir, loc.ref, loc.text, signal) : registrySource(client(), loc.ref, loc.text);
}

/**
 * Copy `src` to `dst` (registry references or oci:DIR[:tag]) byte for byte: the
 * digests at the destination are the digests at the source.
 */
export async function copyImage(src: string, dst: string, opts: CopyOptions = {}): Promise<CopyResult> {
  if (opts.all && opts.platform) throw new OcibuildError("USAGE_BAD_VALUE", "--all and --platform cannot be used together");
  const from = parseLocation(src);
  const to = parseLocation(dst);
  let own: RegistryClient | undefined;
  const client = () => (opts.client ?? (own ??= new RegistryClient(opts.registry)));
  const signal = opts.signal;
  try {
    const source = await openSource(from, client, signal);
    const dest =
      to.kind === "layout"
        ? await layoutDest(to.dir, to.ref ?? opts.defaultLayoutRef, to.text, signal)
        : registryDest(client(), to.ref, to.text);
    const limit = client().limit;
    const stats: CopyResult = { digest: "" as Digest, mediaType: "", blobs: { uploaded: 0, mounted: 0, exists: 0 }, manifests: 0 };
    const blobJobs = new Map<Digest, Promise<void>>();
    const copyBlob = (desc: Descriptor): Promise<void> => {
      let p = blobJobs.get(desc.digest);
      if (!p) {
        p = limit(async () => {
          const outcome = await dest.putBlob(desc, source, signal);
          stats.blobs[outcome]++;
        });
        blobJobs.set(desc.digest, p);
      }
      return p;
    };
    const copyManifestBlobs = async (m: Blob<ImageManifest>): Promise<void> => {
      // Foreign (non-distributable) layers stay where their URLs point, as docker and crane do.
      const descs = [m.parsed.config, ...m.parsed.layers.filter((l) => !isForeign(l))];
      const results = await Promise.allSettled(descs.map(copyBlob));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    };
    // Copy everything a manifest or index refers to, then the manifest itself.
    const copyTree = async (m: AnyManifest, depth: number): Promise<void> => {
      if (depth > 4) throw new OcibuildError("MANIFEST_INVALID", `${source.text} nests indexes too deeply`);
      if (m.kind === "manifest") {
        await copyManifestBlobs(m.blob);
      } else {
        const children = await Promise.all(m.blob.parsed.manifests.map((d) => source.manifest(d, signal)));
        const results = await Promise.allSettled(
          children.map(async (c) => {
            await copyTree(c, depth + 1);
            await dest.putChild(c.blob, signal);
            stats.manifests++;
          }),
        );
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed) throw failed.reason;
      }
    };
    let root = await source.root(signal);
    if (root.kind === "index" && opts.platform) {
      const desc = selectPlatform(root.blob.parsed, opts.platform, source.text);
      root = await source.manifest(desc, signal);
    }
    await copyTree(root, 0);
    await dest.putRoot(root.blob, signal);
    stats.manifests++;
    stats.digest = root.blob.digest;
    stats.mediaType = root.blob.mediaType;
    return stats;
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
    const loc = parseLocation(ref);
    const source = await openSource(loc, client, opts.signal);
    let m = await source.root(opts.signal);
    const platform = opts.platform ?? (opts.config ? hostPlatform() : undefined);
    for (let depth = 0; m.kind === "index" && platform; depth++) {
      if (depth > 3) throw new OcibuildError("MANIFEST_INVALID", `${ref} nests indexes too deeply`);
      m = await source.manifest(selectPlatform(m.blob.parsed, platform, ref), opts.signal);
    }
    if (opts.config) {
      if (m.kind !== "manifest") throw new OcibuildError("MANIFEST_INVALID", `${ref} is not an image`);
      const cd = m.blob.parsed.config;
      const cfg = parseImageConfig(await source.blobBytes(cd, opts.signal), cd.mediaType);
      return { kind: "config", digest: cfg.digest, mediaType: cfg.mediaType, bytes: cfg.bytes, value: cfg.parsed };
    }
    return { kind: m.kind, digest: m.blob.digest, mediaType: m.blob.mediaType, bytes: m.blob.bytes, value: m.blob.parsed };
  } finally {
    await own?.close();
  }
}
