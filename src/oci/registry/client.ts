/**
 * RegistryClient: the OCI distribution API on top of Transport. Manifests and
 * blobs are verified against their digests; pushes skip existing blobs, mount
 * across repositories, and upload monolithically or in chunks.
 */
import pLimit from "p-limit";
import { OcibuildError } from "../../errors.js";
import { type Digest, digestOf, isDigestString, parseDigest } from "../digest.js";
import {
  type AnyManifest,
  type Blob,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
  parseImageConfig,
  parseManifest,
} from "../manifest.js";
import { MANIFEST_ACCEPT } from "../media-types.js";
import { type ImageReference, withDigest } from "../reference.js";
import { readBlob } from "./blob-reader.js";
import { hostPlatform } from "../platform.js";
import { selectImage } from "../image.js";
import { openRegistry } from "../sources.js";
import { type HttpResponse, Transport, hostOf } from "./transport.js";
import type { RegistryOptions, Scope } from "./types.js";
import { type BlobOpener, checkPushAccess, tryMount, upload } from "./upload.js";

/** Manifests and indexes larger than this are refused (the distribution spec's and containerd's limit). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Blobs read into memory (image configs) larger than this are refused. */
export const MAX_IN_MEMORY_BLOB_BYTES = 16 * 1024 * 1024;
const DEFAULT_CHUNK = 16 * 1024 * 1024;

function pullScope(ref: ImageReference): Scope[] {
  return [{ repository: ref.repository, actions: ["pull"] }];
}

/** The manifest in `bytes`, checked against ref.digest or else the registry's Docker-Content-Digest. */
function verifiedManifest(ref: ImageReference, registry: string, res: HttpResponse, bytes: Uint8Array): AnyManifest {
  const got = digestOf(bytes);
  const header = res.header("docker-content-digest");
  const expected = ref.digest ?? (header && header.startsWith("sha256:") && isDigestString(header) ? (header as Digest) : undefined);
  if (expected !== undefined && got !== expected) {
    throw new OcibuildError("DIGEST_MISMATCH", `manifest of ${ref} from ${registry} does not match its digest: expected ${expected}, got ${got}`, {
      details: { registry, expected, got },
    });
  }
  const ct = res.header("content-type")?.split(";")[0]?.trim();
  return parseManifest(bytes, ct);
}

export class RegistryClient {
  readonly transport: Transport;
  /** Bounds parallel blob transfers (default 4). */
  readonly limit: ReturnType<typeof pLimit>;
  readonly options: RegistryOptions;

  constructor(opts: RegistryOptions = {}) {
    this.options = opts;
    this.transport = new Transport(opts);
    this.limit = pLimit(Math.max(1, opts.concurrency ?? 4));
  }

  /** Where to pull a reference from: its mirrors first (docker.io's and --registry-map's), then the origin unless told not to. */
  pullRegistries(ref: ImageReference): string[] {
    const o = this.options;
    const mirrors = [...(ref.registry === "docker.io" ? (o.registryMirrors ?? []) : []), ...(o.registryMap?.[ref.registry] ?? [])].map(hostOf);
    if (mirrors.length === 0) return [ref.registry];
    return o.skipDefaultRegistryFallback ? mirrors : [...mirrors, ref.registry];
  }

  /** Try each pull registry in turn (mirrors fall back to the origin). */
  private async fromAny<T>(ref: ImageReference, fn: (registry: string) => Promise<T>): Promise<T> {
    const regs = this.pullRegistries(ref);
    let last: unknown;
    for (const r of regs) {
      try {
        return await fn(r);
      } catch (e) {
        last = e;
        if (e instanceof OcibuildError && e.code === "ABORTED") throw e;
      }
    }
    throw last;
  }

  async ping(registry: string, signal?: AbortSignal): Promise<void> {
    const res = await this.transport.request({ method: "GET", registry, path: "/v2/", what: `ping ${registry}`, signal });
    await res.body.dump().catch(() => {});
  }

  private async readManifestBody(res: HttpResponse, ref: ImageReference, registry: string): Promise<Uint8Array> {
    const declared = Number(res.header("content-length") ?? "NaN");
    if (Number.isFinite(declared) && declared > MAX_MANIFEST_BYTES) {
      res.body.destroy();
      throw new OcibuildError("MANIFEST_TOO_LARGE", `manifest of ${ref} on ${registry} is ${declared} bytes (limit ${MAX_MANIFEST_BYTES})`);
    }
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res.body as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw new OcibuildError("MANIFEST_TOO_LARGE", `manifest of ${ref} on ${registry} is larger than ${MAX_MANIFEST_BYTES} bytes`);
      }
      chunks.push(c);
    }
    return new Uint8Array(Buffer.concat(chunks));
  }

  /** GET a manifest or index. Verified against ref.digest (or the registry's Docker-Content-Digest). */
  getManifest(ref: ImageReference, opts: { signal?: AbortSignal } = {}): Promise<AnyManifest> {
    return this.fromAny(ref, async (registry) => {
      const what = `get manifest ${ref.familiar}`;
      // The request retries itself; a body cut off while it is read is asked for again, by the same policy.
      const tries = this.transport.retry.start({ registry, what, signal: opts.signal });
      for (;;) {
        const res = await this.transport.request({
          method: "GET",
          registry,
          path: `/v2/${ref.repository}/manifests/${ref.digest ?? ref.tag ?? "latest"}`,
          headers: { accept: MANIFEST_ACCEPT },
          scopes: pullScope(ref),
          what,
          signal: opts.signal,
        });
        let bytes: Uint8Array;
        try {
          bytes = await this.readManifestBody(res, ref, registry);
        } catch (e) {
          await tries.failed(e).catch((final: unknown) => {
            throw final instanceof OcibuildError ? final : new OcibuildError("REGISTRY_UNREACHABLE", `${what}: reading the manifest from ${registry} failed: ${(final as Error).message}`, { cause: final, retryable: true });
          });
          continue;
        }
        return verifiedManifest(ref, registry, res, bytes);
      }
    });
  }

  /** HEAD a manifest: its descriptor, or undefined when the registry does not have it. */
  headManifest(ref: ImageReference, opts: { signal?: AbortSignal } = {}): Promise<Descriptor | undefined> {
    return this.fromAny(ref, async (registry) => {
      const res = await this.transport.request({
        method: "HEAD",
        registry,
        path: `/v2/${ref.repository}/manifests/${ref.digest ?? ref.tag ?? "latest"}`,
        headers: { accept: MANIFEST_ACCEPT },
        scopes: pullScope(ref),
        what: `head manifest ${ref.familiar}`,
        signal: opts.signal,
        ok: [200, 404],
      });
      await res.body.dump().catch(() => {});
      if (res.status === 404) return undefined;
      const d = res.header("docker-content-digest");
      const size = Number(res.header("content-length"));
      const mediaType = res.header("content-type")?.split(";")[0]?.trim();
      if (!d || !isDigestString(d) || !Number.isFinite(size) || !mediaType) {
        const m = await this.getManifest(ref, opts);
        return { mediaType: m.blob.mediaType, digest: m.blob.digest, size: m.blob.bytes.length };
      }
      return { mediaType, digest: parseDigest(d), size };
    });
  }

  /**
   * Resolve to a single-platform image: the manifest (picked from an index by
   * platform, default this host's), its config, and the index if there was one.
   */
  async getImage(
    ref: ImageReference,
    opts: { platform?: Platform; signal?: AbortSignal } = {},
  ): Promise<{ manifest: Blob<ImageManifest>; config: Blob<ImageConfig>; index?: Blob<ImageIndex> }> {
    const top = await openRegistry(this, ref, ref.familiar, opts.signal);
    const image = await selectImage(top, opts.platform ?? hostPlatform(), ref.familiar, opts.signal);
    const config = await image.config(opts.signal);
    return top.kind === "index" ? { manifest: image.manifest, config, index: top.manifest } : { manifest: image.manifest, config };
  }

  /** A blob's bytes as a stream, verified against `d` (and `size`) while streaming; resumes after resets. */
  getBlob(ref: ImageReference, d: Digest, opts: { size?: number; signal?: AbortSignal } = {}): Promise<NodeJS.ReadableStream> {
    return this.fromAny(ref, (registry) =>
      readBlob(this.transport, {
        registry,
        repository: ref.repository,
        digest: d,
        size: opts.size,
        what: `get blob ${d} of ${ref.familiar}`,
        signal: opts.signal,
        onBytes: this.options.onProgress ? (n) => this.options.onProgress?.({ kind: "pull", digest: d, bytes: n, total: opts.size }) : undefined,
      }),
    );
  }

  /** A small blob (a config) in memory, verified; at most MAX_IN_MEMORY_BLOB_BYTES whatever its descriptor says. */
  async getBlobBytes(ref: ImageReference, d: Digest, opts: { size?: number; signal?: AbortSignal } = {}): Promise<Uint8Array> {
    const tooLarge = (size: string) =>
      new OcibuildError("BLOB_TOO_LARGE", `blob ${d} of ${ref.familiar} is ${size}: too large to read into memory (limit ${MAX_IN_MEMORY_BLOB_BYTES} bytes)`, {
        details: { registry: ref.registry, digest: d, limit: MAX_IN_MEMORY_BLOB_BYTES },
      });
    if (opts.size !== undefined && opts.size > MAX_IN_MEMORY_BLOB_BYTES) throw tooLarge(`${opts.size} bytes`);
    const s = await this.getBlob(ref, d, opts);
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of s as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_IN_MEMORY_BLOB_BYTES) {
        (s as { destroy?: () => void }).destroy?.();
        throw tooLarge(`larger than ${MAX_IN_MEMORY_BLOB_BYTES} bytes`);
      }
      chunks.push(c);
    }
    return new Uint8Array(Buffer.concat(chunks));
  }

  /**
   * Does ref's repository itself (never a mirror) already hold the manifest with
   * digest `d`? Asked with push scope, so the token also serves the push that follows.
   */
  async manifestExists(ref: ImageReference, d: Digest, signal?: AbortSignal): Promise<boolean> {
    const res = await this.transport.request({
      method: "HEAD",
      registry: ref.registry,
      path: `/v2/${ref.repository}/manifests/${d}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [{ repository: ref.repository, actions: ["pull", "push"] }],
      what: `check manifest ${d} in ${ref.familiar}`,
      signal,
      ok: [200, 404],
    });
    await res.body.dump().catch(() => {});
    return res.status === 200;
  }

  /** The digest the registry gives for `ref`'s tag (HEAD), or undefined when the tag is absent or the registry names no digest. */
  async manifestDigestAt(ref: ImageReference, tag: string, signal?: AbortSignal): Promise<string | undefined> {
    const res = await this.transport.request({
      method: "HEAD",
      registry: ref.registry,
      path: `/v2/${ref.repository}/manifests/${tag}`,
      headers: { accept: MANIFEST_ACCEPT },
      scopes: [{ repository: ref.repository, actions: ["pull", "push"] }],
      what: `check manifest ${ref.name}:${tag}`,
      signal,
      ok: [200, 404],
    });
    await res.body.dump().catch(() => {});
    return res.status === 200 ? res.header("docker-content-digest") : undefined;
  }

  async blobExists(ref: ImageReference, d: Digest, signal?: AbortSignal): Promise<boolean> {
    const res = await this.transport.request({
      method: "HEAD",
      registry: ref.registry,
      path: `/v2/${ref.repository}/blobs/${d}`,
      scopes: pullScope(ref),
      what: `check blob ${d} in ${ref.familiar}`,
      signal,
      ok: [200, 404],
    });
    await res.body.dump().catch(() => {});
    return res.status === 200;
  }

  /**
   * Make `desc` present in ref's repository: skip if it exists, mount it from one of
   * `mountFrom` (repositories of the same registry), else upload it (chunked when
   * larger than the chunk size). `open` may be called more than once (retries).
   */
  async pushBlob(
    ref: ImageReference,
    desc: Descriptor,
    open: BlobOpener,
    opts: { mountFrom?: string[]; signal?: AbortSignal } = {},
  ): Promise<"exists" | "mounted" | "uploaded"> {
    if (await this.blobExists(ref, desc.digest, opts.signal)) {
      this.options.onProgress?.({ kind: "exists", digest: desc.digest, bytes: desc.size, total: desc.size });
      return "exists";
    }
    const ctx = {
      transport: this.transport,
      registry: ref.registry,
      repository: ref.repository,
      chunkSize: Math.max(1, this.options.chunkSize ?? DEFAULT_CHUNK),
      signal: opts.signal,
      onProgress: this.options.onProgress,
    };
    let session: string | undefined;
    if (opts.mountFrom?.length) {
      const m = await tryMount(ctx, desc, opts.mountFrom);
      if (m.mounted) return "mounted";
      session = m.session;
    }
    await upload(ctx, desc, open, session);
    return "uploaded";
  }

  /** Throws (REGISTRY_UNAUTHORIZED, REGISTRY_DENIED, REGISTRY_UNREACHABLE, ...) unless the credentials at hand may push to ref's repository. */
  async checkPush(ref: ImageReference, signal?: AbortSignal): Promise<void> {
    await checkPushAccess({ transport: this.transport, registry: ref.registry, repository: ref.repository, chunkSize: DEFAULT_CHUNK, signal });
  }

  /** PUT a manifest or index by ref.tag (or by its digest when ref has no tag). Returns its digest. */
  async putManifest(ref: ImageReference, blob: Blob, signal?: AbortSignal): Promise<Digest> {
    const target = ref.tag ?? blob.digest;
    if (ref.digest !== undefined && ref.tag === undefined && ref.digest !== blob.digest) {
      throw new OcibuildError("DIGEST_MISMATCH", `cannot push a manifest with digest ${blob.digest} as ${ref}`);
    }
    const res = await this.transport.request({
      method: "PUT",
      registry: ref.registry,
      path: `/v2/${ref.repository}/manifests/${target}`,
      headers: { "content-type": blob.mediaType },
      body: () => blob.bytes,
      scopes: [{ repository: ref.repository, actions: ["pull", "push"] }],
      what: `push manifest ${ref.name}:${target}`,
      signal,
      ok: [200, 201, 202, 204],
    });
    await res.body.dump().catch(() => {});
    const d = res.header("docker-content-digest");
    if (d && d.startsWith("sha256:") && d !== blob.digest) {
      throw new OcibuildError("DIGEST_MISMATCH", `registry ${ref.registry} stored the manifest as ${d}, but its bytes hash to ${blob.digest}`, {
        details: { registry: ref.registry },
      });
    }
    return blob.digest;
  }

  /** Release connections. */
  close(): Promise<void> {
    return this.transport.close();
  }
}
