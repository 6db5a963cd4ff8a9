/**
 * The registry sink: an image or an index (image.ts) pushed to one or more
 * references, one after the other. For each reference: an image's blobs in parallel
 * (bounded by the client's limit, each distinct blob once), skipped when the
 * repository has it, mounted from a repository of the same registry that holds it
 * (an earlier reference, or the blob's origin: a base image, a copy's source), else
 * uploaded; the manifest last. A repository that already holds an image's manifest
 * gets only the manifest (re)put: a registry accepts a manifest only once every blob
 * it names is there, so its blobs need no checking; when the tag already names that
 * manifest, nothing is put. An index's images (and indexes)
 * are pushed by digest, in parallel, then the index by the reference.
 */
import type { Digest } from "../digest.js";
import { type Artifact, type Image, type ImageBlob, isForeign, settleAll } from "../image.js";
import type { Descriptor } from "../manifest.js";
import { type ImageReference, withDigest } from "../reference.js";
import type { RegistryClient } from "./client.js";

export type BlobOutcome = "exists" | "mounted" | "uploaded";

export interface PushResult {
  /** The digest and media type of the top manifest or index. */
  digest: Digest;
  mediaType: string;
  /** Blobs per outcome, over every reference. */
  blobs: { uploaded: number; mounted: number; exists: number };
  /** Manifests and indexes put (or found already in place at a tag), over every reference. */
  manifests: number;
}

export interface PushOptions {
  signal?: AbortSignal;
  /** Called after each blob, with what happened to it (`ref` is the reference being pushed to). */
  onBlob?: (ref: ImageReference, desc: Descriptor, outcome: BlobOutcome) => void;
  /**
   * Awaited before the first write (a blob checked, mounted or uploaded; a manifest put):
   * a build's push-permission check, whose error then is the push's. A push that finds
   * everything in place (the tag names the manifest already) writes nothing and does not
   * wait for it.
   */
  beforeWrite?: () => Promise<void>;
  /**
   * Whether the manifest of this digest was just made, so that no repository can hold it
   * yet (a build's image with a layer it wrote, its history stamped now): its blobs are
   * pushed without first asking whether the repository has the manifest. Only a
   * shortcut: were it there after all, its blobs are found there and it is put again.
   */
  isNew?: (manifest: Digest) => boolean;
}

/** One reference being pushed to. */
interface Target {
  client: RegistryClient;
  ref: ImageReference;
  /** Repositories of the same registry pushed to before this one: every blob can be mounted from them. */
  mountFrom: string[];
  /** Each distinct blob once per reference. */
  jobs: Map<Digest, Promise<void>>;
  result: PushResult;
  opts: PushOptions;
}

function record(t: Target, desc: Descriptor, outcome: BlobOutcome): void {
  t.result.blobs[outcome]++;
  t.opts.onBlob?.(t.ref, desc, outcome);
}

function pushBlob(t: Target, b: ImageBlob): Promise<void> {
  const { signal } = t.opts;
  let job = t.jobs.get(b.descriptor.digest);
  if (!job) {
    job = t.client.limit(async () => {
      const origin = b.origin && b.origin.registry === t.ref.registry ? [b.origin.repository] : [];
      const outcome = await t.client.pushBlob(t.ref, b.descriptor, (s) => b.open(s ?? signal), { mountFrom: [...t.mountFrom, ...origin], signal });
      record(t, b.descriptor, outcome);
    });
    t.jobs.set(b.descriptor.digest, job);
  }
  return job;
}

async function pushImageBlobs(t: Target, img: Image): Promise<void> {
  const blobs = img.blobs.filter((b) => !isForeign(b.descriptor));
  if (!t.opts.isNew?.(img.manifest.digest) && (await t.client.manifestExists(t.ref, img.manifest.digest, t.opts.signal))) {
    for (const b of blobs) {
      if (t.jobs.has(b.descriptor.digest)) continue;
      t.jobs.set(b.descriptor.digest, Promise.resolve());
      record(t, b.descriptor, "exists");
    }
    return;
  }
  await t.opts.beforeWrite?.();
  await settleAll(blobs, (b) => pushBlob(t, b));
}

/**
 * The digest `ref`'s tag names now, asked while the blobs are checked: when it is
 * `a`'s, the manifest is in place and is not put again (a fully cached rebuild's
 * push is then one round trip). Any failure of that question just means a put.
 */
function tagDigest(t: Target, ref: ImageReference): Promise<string | undefined> {
  if (ref.tag === undefined) return Promise.resolve(undefined);
  return t.client.manifestDigestAt(ref, ref.tag, t.opts.signal).catch(() => undefined);
}

/** Everything `a` names, then `a` itself as `ref` (unless the tag names it already). */
async function pushTree(t: Target, a: Artifact, ref: ImageReference): Promise<void> {
  const atTag = tagDigest(t, ref);
  if (a.kind === "image") await pushImageBlobs(t, a);
  else {
    await settleAll(a.entries, async (e) => {
      const child = await e.open(t.opts.signal);
      await pushTree(t, child, withDigest(t.ref, child.manifest.digest));
    });
  }
  if ((await atTag) !== a.manifest.digest) {
    await t.opts.beforeWrite?.();
    await t.client.putManifest(ref, a.manifest, t.opts.signal);
  }
  t.result.manifests++;
}

/** Push `a` to every reference of `refs` (by its tag, or by digest for a reference without one). */
export async function pushArtifact(client: RegistryClient, a: Artifact, refs: readonly ImageReference[], opts: PushOptions = {}): Promise<PushResult> {
  const result: PushResult = { digest: a.manifest.digest, mediaType: a.manifest.mediaType, blobs: { uploaded: 0, mounted: 0, exists: 0 }, manifests: 0 };
  const done: ImageReference[] = [];
  for (const ref of refs) {
    const mountFrom = done.filter((r) => r.registry === ref.registry && r.repository !== ref.repository).map((r) => r.repository);
    await pushTree({ client, ref, mountFrom, jobs: new Map(), result, opts }, a, ref);
    done.push(ref);
  }
  return result;
}
