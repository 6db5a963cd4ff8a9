/**
 * Before a build runs anything: every repository it will push to accepts a push
 * with the credentials at hand, checked as kaniko's CheckPushPermissions checks it
 * (an upload session opened with push scope, then cancelled), so a push that must
 * fail (no credentials, denied, unreachable) fails in seconds, before the first
 * RUN, not after the whole build. build.ts asks for it at the first step that must
 * run, copy or pull, or at the push's first write (none when the tag is current); a
 * COPY of context files goes on while it is made, and ends with its error
 * (cached-step.ts executeChecked).
 */
import { isOcibuildError, OcibuildError, optionWords } from "../errors.js";
import { DOCKER_HUB, type ImageReference } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";

/** A tag written without a registry host names Docker Hub's library/, where only Docker may push: say how to keep the image local. */
function archiveHint(ref: ImageReference): string | undefined {
  if (ref.registry !== DOCKER_HUB || !ref.repository.startsWith("library/")) return undefined;
  const name = ref.repository.slice("library/".length).replaceAll("/", "-");
  return (
    `${ref.familiar} has no registry host, so it names ${ref.toString()} on Docker Hub. ` +
    `To keep the image here, add ${optionWords("push", "false")} and write a file: ${optionWords("outputs", `docker-archive:${name}.tar`)} ` +
    `(then docker load -i ${name}.tar) or ${optionWords("outputs", `oci:${name}-layout`)}; to push, name a registry: ${optionWords("tags", `REGISTRY/${ref.familiar}`)}`
  );
}

function pushCheckError(e: unknown, ref: ImageReference): unknown {
  if (!isOcibuildError(e) || e.code === "ABORTED") return e;
  return new OcibuildError(e.code, `cannot push to ${ref.toString()} (checked before building; ${optionWords("skipPushPermissionCheck")} skips the check): ${e.message}`, {
    cause: e,
    retryable: e.retryable,
    hint: archiveHint(ref) ?? e.hint,
    details: { ...e.details, reference: ref.toString() },
  });
}

/** Checks each repository of `refs` once, all at the same time. */
export async function checkPushPermissions(registry: RegistryClient, refs: readonly ImageReference[], signal?: AbortSignal): Promise<void> {
  const repos = new Map<string, ImageReference>();
  for (const r of refs) if (!repos.has(r.name)) repos.set(r.name, r);
  await Promise.all(
    [...repos.values()].map((ref) =>
      registry.checkPush(ref, signal).catch((e: unknown) => {
        throw pushCheckError(e, ref);
      }),
    ),
  );
}

/**
 * The check of `refs`, made once, when the returned function is first called: by the
 * first step that must run, copy, pull or convert, or by the push before its first
 * write, whichever comes first. No command, pull or conversion starts before it passes
 * (a COPY of context files runs meanwhile, its result kept only once it passed), and a
 * fully cached rebuild whose tag already names its image writes nothing and so does not
 * pay the check's round trips (nor wait for them before its first step).
 */
export function lazyPushCheck(registry: RegistryClient, refs: readonly ImageReference[], signal?: AbortSignal): () => Promise<void> {
  let check: Promise<void> | undefined;
  return () => {
    if (!check) {
      check = checkPushPermissions(registry, refs, signal);
      check.catch(() => {}); // every caller awaits it; this only marks it handled
    }
    return check;
  };
}
