/**
 * Push one built image (config, layers, manifest) to one or more references:
 * blobs in parallel (bounded by the client's limit), skipping what exists and
 * mounting from an earlier target of the same registry; the manifest last. A
 * repository that already holds the manifest only gets the tag.
 */
import type { Digest } from "../digest.js";
import type { Blob, Descriptor, ImageManifest } from "../manifest.js";
import type { ImageReference } from "../reference.js";
import { Readable } from "node:stream";
import type { RegistryClient } from "./client.js";
import type { BlobOpener } from "./upload.js";

export interface PushableImage {
  manifest: Blob<ImageManifest>;
  config: Blob;
  /** Each layer's descriptor, a way to (re)open its compressed bytes, and repositories of the same registry it may be mounted from. */
  layers: { desc: Descriptor; open: BlobOpener; mountFrom?: string[] }[];
}

export interface PushResult {
  digest: Digest;
  blobs: { uploaded: number; mounted: number; exists: number };
}

export async function pushImage(
  client: RegistryClient,
  refs: ImageReference[],
  image: PushableImage,
  opts: {
    mountFrom?: string[];
    signal?: AbortSignal;
    /** Called after each blob, with what happened to it. */
    onBlob?: (ref: ImageReference, desc: Descriptor, outcome: "exists" | "mounted" | "uploaded") => void;
  } = {},
): Promise<PushResult> {
  const stats = { uploaded: 0, mounted: 0, exists: 0 };
  const cfg = image.manifest.parsed.config;
  const blobs: { desc: Descriptor; open: BlobOpener; mountFrom?: string[] }[] = [
    { desc: cfg, open: () => Readable.from([Buffer.from(image.config.bytes)]) },
    ...image.layers,
  ];
  const done: ImageReference[] = [];
  for (const ref of refs) {
    const mountFrom = [
      ...done.filter((r) => r.registry === ref.registry && r.repository !== ref.repository).map((r) => r.repository),
      ...(opts.mountFrom ?? []),
    ];
    // The repository already holds this very manifest (a rebuild with nothing changed):
    // a registry accepts a manifest only once every blob it names is there, so the
    // blobs need no checking; only the tag is (re)pointed.
    if (await client.manifestExists(ref, image.manifest.digest, opts.signal)) {
      for (const b of blobs) {
        stats.exists++;
        opts.onBlob?.(ref, b.desc, "exists");
      }
      await client.putManifest(ref, image.manifest, opts.signal);
      done.push(ref);
      continue;
    }
    const results = await Promise.allSettled(
      blobs.map((b) =>
        client.limit(async () => {
          const outcome = await client.pushBlob(ref, b.desc, b.open, { mountFrom: [...mountFrom, ...(b.mountFrom ?? [])], signal: opts.signal });
          stats[outcome]++;
          opts.onBlob?.(ref, b.desc, outcome);
        }),
      ),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    await client.putManifest(ref, image.manifest, opts.signal);
    done.push(ref);
  }
  return { digest: image.manifest.digest, blobs: stats };
}
