/**
 * Where a built image goes: registry references and file outputs (OCI layout
 * directories, oci-archive and docker-archive files). The build hands what it made
 * as one image or index (stage-image.ts) to the sinks of src/oci: registry/push.ts
 * (blobs in parallel, base layers mounted from their repository when it is on the
 * same registry, manifest last), layout-sink.ts (a new directory written beside the
 * target and renamed into place, so a failed build leaves no half layout),
 * oci-archive.ts and docker-archive.ts (temp name then rename).
 */
import { writeDockerArchive } from "../oci/docker-archive.js";
import type { Artifact } from "../oci/image.js";
import type { Digest } from "../oci/digest.js";
import { writeLayout } from "../oci/layout-sink.js";
import { writeOciArchive } from "../oci/oci-archive.js";
import { parseReference, withTag, type ImageReference } from "../oci/reference.js";
import { formatPlatform } from "../oci/platform.js";
import { OcibuildError, optionWords } from "../errors.js";
import { checkWritable, pathError } from "../user-path.js";
import { pushArtifact } from "../oci/registry/push.js";
import type { RegistryClient } from "../oci/registry/index.js";
import type { EventSink } from "./events.js";
import type { PushCheck } from "./push-check.js";

/**
 * One place a build writes its image to (the CLI's `--output`, repeatable):
 * - `registry`: push to `names` (buildx's name=), or to every tag when it has none;
 * - `oci`: an OCI image layout directory, the manifest named `tag` in index.json;
 * - `oci-archive`: the same layout as one tar file;
 * - `docker-archive`: a `docker save` tar that `docker load`/`podman load` read,
 *   named by `tags` (default: the build's tags).
 */
export type BuildOutput =
  | { type: "registry"; names?: string[] }
  | { type: "oci"; dest: string; tag?: string }
  | { type: "oci-archive"; dest: string; tag?: string }
  | { type: "docker-archive"; dest: string; tags?: string[] };

/**
 * Where a build pushes: every tag unless `push` is false (default: push when there
 * are tags or registry outputs), and each registry output's names (its tags when it
 * has none); each reference once.
 */
export function pushTargets(outputs: readonly BuildOutput[], tags: readonly ImageReference[], push: boolean | undefined): ImageReference[] {
  const registry = outputs.filter((o): o is Extract<BuildOutput, { type: "registry" }> => o.type === "registry");
  const refs = (push ?? (tags.length > 0 || registry.length > 0)) ? [...tags] : [];
  for (const o of registry) refs.push(...(o.names?.map((n) => parseReference(n)) ?? tags));
  const seen = new Set<string>();
  return refs.map((r) => (r.tag ? r : withTag(r, "latest"))).filter((r) => !seen.has(r.toString()) && seen.add(r.toString()));
}

/**
 * Push what the build made to every reference: a single image by tag, or every
 * platform's image by digest and then the index by tag. Each blob is told as a
 * `push` event.
 */
export async function pushBuilt(
  a: Artifact,
  refs: readonly ImageReference[],
  registry: RegistryClient,
  opts: { onEvent?: EventSink; signal?: AbortSignal; check?: PushCheck; isNew?: (manifest: Digest) => boolean } = {},
): Promise<void> {
  await pushArtifact(registry, a, refs, {
    signal: opts.signal,
    beforeWrite: opts.check?.beforePushWrite,
    isNew: opts.isNew,
    onBlob: (ref, desc, status) => opts.onEvent?.({ type: "push", reference: ref.name, digest: desc.digest, status, size: desc.size }),
  }).catch(async (e: unknown) => {
    await opts.check?.afterPushFailed();
    throw e;
  });
}

export interface OutputOptions {
  /** Most bytes a layer may decompress to where an output decompresses it (BuildOptions.maxLayerSize). */
  maxLayerSize?: number;
  /** Annotations of the layout's index.json entry (the index-descriptor level). */
  indexDescriptorAnnotations?: Record<string, string>;
  signal?: AbortSignal;
}

const OUTPUT_KIND = { oci: "the OCI layout", "oci-archive": "the OCI archive", "docker-archive": "the docker archive" } as const;

/** Before the build: every file output can be written (its directory exists and is writable), or a coded error names it. */
export async function checkOutputPaths(outputs: readonly BuildOutput[]): Promise<void> {
  for (const o of outputs) {
    if (o.type === "registry") continue;
    await checkWritable(o.dest, o.type === "oci" ? "dir" : "file", (e) => pathError("OUTPUT_WRITE_FAILED", `cannot write ${OUTPUT_KIND[o.type]}`, o.dest, e));
  }
}

/** Whether an index holds one image (its other entries attestation manifests, as BuildKit attaches them). */
function runnableEntries(a: Artifact) {
  return a.kind === "image" ? [] : a.entries.filter((e) => e.descriptor.annotations?.["vnd.docker.reference.type"] !== "attestation-manifest");
}

/** The one image a single-image output takes (an index's only runnable entry: a docker archive has no room for attestations); a usage error naming `kind` when the build made several. */
async function singleImage(a: Artifact, kind: string, signal?: AbortSignal) {
  if (a.kind === "image") return a;
  const runnable = runnableEntries(a);
  if (runnable.length === 1) {
    const img = await runnable[0]!.open(signal);
    if (img.kind === "image") return img;
  }
  const platforms = runnable.map((e) => formatPlatform(e.descriptor.platform!));
  throw new OcibuildError("USAGE_BAD_VALUE", `a ${kind} output holds one platform, but ${platforms.length} were built (${platforms.join(", ")}); pick one with ${optionWords("platform")}, or use ${optionWords("outputs", "oci:DIR")}`);
}

/** Write one file output; what was written, as a reference ("oci:DIR:TAG", "docker-archive:FILE"). */
async function writeOutput(a: Artifact, out: Exclude<BuildOutput, { type: "registry" }>, tags: readonly ImageReference[], opts: OutputOptions): Promise<string> {
  const { signal } = opts;
  switch (out.type) {
    case "oci": {
      const tag = out.tag ?? tags[0]?.tag;
      await writeLayout(a, out.dest, { tag, beside: true, signal, annotations: opts.indexDescriptorAnnotations }).catch((e: unknown) => {
        throw pathError("OUTPUT_WRITE_FAILED", "cannot write the OCI layout", out.dest, e);
      });
      return `oci:${out.dest}${tag ? `:${tag}` : ""}`;
    }
    case "oci-archive": {
      const tag = out.tag ?? tags[0]?.tag;
      // One platform, with its attestations as BuildKit's oci exporter keeps them.
      if (runnableEntries(a).length > 1) await singleImage(a, "oci-archive", signal);
      await writeOciArchive(out.dest, a, { tag, signal });
      return `oci-archive:${out.dest}${tag ? `:${tag}` : ""}`;
    }
    case "docker-archive": {
      const names = out.tags ?? tags.map((t) => t.toString());
      await writeDockerArchive(out.dest, await singleImage(a, "docker-archive", signal), { repoTags: names, maxLayerSize: opts.maxLayerSize, signal });
      return `docker-archive:${out.dest}`;
    }
  }
}

/**
 * Writes `a` to every file output in `outputs` (oci, oci-archive,
 * docker-archive; `registry` outputs are pushes and are skipped here). `tags`
 * are the build's tags: the default layout ref name and docker-archive RepoTags.
 * Returns what was written, as references ("oci:DIR:TAG", "docker-archive:FILE").
 */
export async function writeOutputs(a: Artifact, outputs: readonly BuildOutput[], tags: readonly ImageReference[], opts: OutputOptions = {}): Promise<string[]> {
  const written: string[] = [];
  for (const out of outputs) {
    opts.signal?.throwIfAborted();
    if (out.type !== "registry") written.push(await writeOutput(a, out, tags, opts));
  }
  return written;
}
