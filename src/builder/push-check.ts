/**
 * Before a build runs anything: every repository it will push to accepts a push
 * with the credentials at hand, checked as kaniko's CheckPushPermissions checks it
 * (an upload session opened with push scope, then cancelled), so a push that must
 * fail (no credentials, denied, unreachable) fails in seconds, before the first
 * RUN, not after the whole build. build.ts asks for it at the first step that must
 * run, copy or pull (a COPY of context files goes on while it is made, and ends with
 * its error: cached-step.ts executeChecked), or after the last step, before
 * attestations, a signature or a conversion, or at the first write of a push to several
 * repositories. A fully cached rebuild pushed to one repository is not checked first:
 * its push's own first write asks (PushCheck.beforePushWrite).
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

/**
 * When the check is made: before building or before pushing, which its refusal says (with
 * how to skip it); or after a push failed, when it says why that push failed.
 */
export type CheckMoment = "building" | "pushing" | "failed";

function pushCheckError(e: unknown, ref: ImageReference, moment: CheckMoment): unknown {
  if (!isOcibuildError(e) || e.code === "ABORTED") return e;
  const when = moment === "failed" ? "" : ` (checked before ${moment}; ${optionWords("skipPushPermissionCheck")} skips the check)`;
  return new OcibuildError(e.code, `cannot push to ${ref.toString()}${when}: ${e.message}`, {
    cause: e,
    retryable: e.retryable,
    hint: archiveHint(ref) ?? e.hint,
    details: { ...e.details, reference: ref.toString() },
  });
}

/** Checks each repository of `refs` once, all at the same time. */
export async function checkPushPermissions(registry: RegistryClient, refs: readonly ImageReference[], signal?: AbortSignal, moment: CheckMoment = "building"): Promise<void> {
  const repos = new Map<string, ImageReference>();
  for (const r of refs) if (!repos.has(r.name)) repos.set(r.name, r);
  await Promise.all(
    [...repos.values()].map((ref) =>
      registry.checkPush(ref, signal).catch((e: unknown) => {
        throw pushCheckError(e, ref, moment);
      }),
    ),
  );
}

/** The push-permission check of a build, made at most once. */
export interface PushCheck {
  /**
   * Makes the check (at the first call) and waits for it: the first step that must run,
   * copy, pull or convert ("building"), or the work after the last step that a push then
   * needs (attestations, a signature, a conversion: "pushing", which its refusal says).
   */
  before: (moment?: "building" | "pushing") => Promise<void>;
  /**
   * What the push waits for before its first write: the check when a step made it already
   * (its error is then the push's), or when the push goes to more than one repository
   * (nothing is written to one before every one has been checked). Otherwise nothing: the
   * build's work is done, and the push's own first write asks the registry the same
   * question, without the check's two round trips (an upload session opened, then
   * cancelled) before it. A fully cached rebuild pushed to a new tag then costs one round
   * trip and the manifest's put. A push that fails makes the check then (afterPushFailed).
   */
  beforePushWrite: () => Promise<void>;
  /**
   * Makes the check (unless it was made) once a push failed (output.ts pushBuilt): a
   * refusal says why, and how to keep the image local, better than the push's first error.
   */
  afterPushFailed: () => Promise<void>;
}

/**
 * The check of `refs`, made once, when `before` is first called: by the first step that
 * must run, copy, pull or convert, or by a push to several repositories before its first
 * write. No command, pull or conversion starts before it passes (a COPY of context files
 * runs meanwhile, its result kept only once it passed). A fully cached rebuild does not
 * pay its round trips: when its tag already names its image it writes nothing, and
 * otherwise its push's first write asks (beforePushWrite).
 */
export function lazyPushCheck(registry: RegistryClient, refs: readonly ImageReference[], signal?: AbortSignal): PushCheck {
  let check: Promise<void> | undefined;
  const make = (moment: CheckMoment): Promise<void> => {
    if (!check) {
      check = checkPushPermissions(registry, refs, signal, moment);
      check.catch(() => {}); // every caller awaits it; this only marks it handled
    }
    return check;
  };
  const repositories = new Set(refs.map((r) => r.name)).size;
  return {
    before: (moment = "building") => make(moment),
    beforePushWrite: () => check ?? (repositories > 1 ? make("pushing") : Promise.resolve()),
    afterPushFailed: () => make("failed"),
  };
}
