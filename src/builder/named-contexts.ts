/**
 * Named build contexts (buildx's `--build-context NAME=VALUE`, the library's
 * `buildContexts`). A name stands where BuildKit lets it: `FROM NAME`,
 * `COPY --from=NAME`, `RUN --mount from=NAME`; it replaces a stage of that name
 * (`FROM ... AS NAME`) and an image reference that names it (`FROM alpine` with a
 * context named `alpine`: names compare as BuildKit compares them, in Docker's short
 * form without `:latest`). A VALUE is
 *  - a local directory (a path or dir://PATH), tar://ARCHIVE or a git URL: a tree that
 *    COPY --from and RUN --mount read as they read the main context, with its own
 *    .dockerignore (NAME.dockerignore at its root first, then .dockerignore, BuildKit's);
 *  - docker-image://REF: that image (a base pinned by digest: docker-image://alpine@sha256:...);
 *  - oci-layout://DIR[:TAG] or oci-layout://DIR@sha256:...: an image of a local OCI layout.
 */
import { join, resolve } from "node:path";
import { isOcibuildError, OcibuildError, optionWords } from "../errors.js";
import { selectImage } from "../oci/image.js";
import { parseLayoutRef, type OciLayout } from "../oci/layout.js";
import type { Platform } from "../oci/platform.js";
import { parseReference, parseReferenceNoDefault } from "../oci/reference.js";
import type { RegistryClient } from "../oci/registry/index.js";
import { openLayout, openRegistry } from "../oci/sources.js";
import { imageState, scratchState, stateOfImage } from "./base.js";
import { checkContextDir, materializeContext, parseContextSpec, type ContextSpec, type MaterializedContext, type MaterializeOptions } from "./context-source.js";
import { localTree, type SourceTree } from "./sources.js";
import type { StageState } from "./stage-state.js";

type Entry =
  | { readonly kind: "tree"; readonly name: string; readonly tree: SourceTree }
  | { readonly kind: "image"; readonly name: string; readonly ref: string }
  | { readonly kind: "layout"; readonly name: string; readonly dir: string; readonly ref?: string; readonly text: string };

/** What resolving a named image needs from the build. */
export interface NamedImageDeps {
  registry: RegistryClient;
  /** The build's content store: an OCI layout's layers are copied there, where steps and pushes read local layers. */
  content: OciLayout;
  signal?: AbortSignal;
}

/** How BuildKit matches a name: Docker's short form of the reference, without ":latest"; undefined for what is no image name. */
export function contextKey(name: string): string | undefined {
  try {
    const short = parseReferenceNoDefault(name).familiar;
    return short.endsWith(":latest") ? short.slice(0, -":latest".length) : short;
  } catch {
    return undefined;
  }
}

const HINT = "a named context is a directory, tar://ARCHIVE, a git URL, docker-image://REF or oci-layout://DIR[:TAG]";

function badValue(name: string, value: string, why: string): OcibuildError {
  return new OcibuildError("BUILD_CONTEXT_UNSUPPORTED", `${optionWords("buildContexts", `${name}=${value}`)}: ${why}`, { hint: HINT });
}

/** The name as BuildKit looks it up; a name no FROM or --from could use is refused rather than ignored. */
function checkedName(name: string, value: string): string {
  const key = contextKey(name);
  if (key === undefined) throw badValue(name, value, `"${name}" is not a name FROM or --from can use (lowercase letters, digits, separators, as an image name)`);
  if (key === "scratch" || key === "context") throw badValue(name, value, `"${name}" is reserved (BuildKit never looks it up as a context)`);
  return key;
}

type Parsed = Exclude<Entry, { kind: "tree" }> | { kind: "source"; spec: Exclude<ContextSpec, { kind: "stdin" }> };

/** What VALUE names; a value that cannot be read is the user's mistake, named with its context. */
function parseValue(name: string, value: string): Parsed {
  try {
    if (value.startsWith("docker-image://")) {
      const ref = value.slice("docker-image://".length);
      // docker-image://scratch is an empty context (BuildKit #3130).
      if (ref !== "scratch") parseReference(ref);
      return { kind: "image", name, ref };
    }
    if (value.startsWith("oci-layout://")) {
      const { dir, ref } = parseLayoutRef(`oci:${value.slice("oci-layout://".length)}`);
      return { kind: "layout", name, dir: resolve(dir), ...(ref !== undefined ? { ref } : {}), text: value };
    }
    const spec = parseContextSpec(value);
    if (spec.kind === "stdin") throw new OcibuildError("BUILD_CONTEXT_UNSUPPORTED", "only the main context can be read from stdin");
    return { kind: "source", spec: spec.kind === "dir" ? { kind: "dir", path: resolve(spec.path) } : spec };
  } catch (e) {
    if (!isOcibuildError(e)) throw e;
    throw new OcibuildError(e.code, `${optionWords("buildContexts", `${name}=${value}`)}: ${e.message}`, { cause: e, hint: e.hint ?? HINT, details: e.details });
  }
}

/** One named context made ready: an image is only parsed (resolved when a stage asks), a tree made a directory. */
async function openEntry(name: string, value: string, opts: Omit<MaterializeOptions, "stdin">, made: MaterializedContext[]): Promise<Entry> {
  const parsed = parseValue(name, value);
  if (parsed.kind !== "source") return parsed;
  const m = await materializeContext(parsed.spec, opts);
  made.push(m);
  const label = `context '${name}'`;
  await checkContextDir(m.dir, `${label} (${m.dir})`);
  const tree = await localTree(m.dir, [join(m.dir, `${name}.dockerignore`), join(m.dir, ".dockerignore")], { label, keyPrefix: `${label} file ` });
  return { kind: "tree", name, tree };
}

/** An image of a local OCI layout, its layers copied (verified) into the build's content store. */
/** A docker-image:// context's image, resolved in its registry for `platform`. */
async function registryImageState(text: string, platform: Platform, deps: NamedImageDeps): Promise<StageState> {
  const ref = parseReference(text);
  const image = await selectImage(await openRegistry(deps.registry, ref, ref.familiar, deps.signal), platform, ref.familiar, deps.signal);
  return imageState(ref, image, deps.signal);
}

async function layoutState(e: Extract<Entry, { kind: "layout" }>, platform: Platform, deps: NamedImageDeps): Promise<StageState> {
  const what = `context '${e.name}' (${e.text})`;
  const image = await selectImage(await openLayout(e.dir, e.ref, what, deps.signal), platform, what, deps.signal);
  for (const l of await image.layers(deps.signal)) {
    await deps.content.writeBlob(await l.open(deps.signal), { digest: l.descriptor.digest, size: l.descriptor.size }, deps.signal, { sourceVerified: true });
  }
  return stateOfImage(image, `oci-layout://${e.dir}@${image.manifest.digest}`, { kind: "local" }, deps.signal);
}

/** The named contexts of one build; `dispose` removes what was made for them (archives, git checkouts). */
export class NamedContexts {
  private constructor(
    private readonly entries: ReadonlyMap<string, Entry>,
    private readonly made: readonly MaterializedContext[],
  ) {}

  static async open(values: Readonly<Record<string, string>>, opts: Omit<MaterializeOptions, "stdin">): Promise<NamedContexts> {
    const entries = new Map<string, Entry>();
    const made: MaterializedContext[] = [];
    try {
      for (const [name, value] of Object.entries(values)) {
        entries.set(checkedName(name, value), await openEntry(name, value, opts, made));
      }
    } catch (e) {
      await Promise.all(made.map((m) => m.dispose().catch(() => {})));
      throw e;
    }
    return new NamedContexts(entries, made);
  }

  private entry(name: string): Entry | undefined {
    if (this.entries.size === 0) return undefined;
    const key = contextKey(name);
    return key === undefined ? undefined : this.entries.get(key);
  }

  /** Whether `name` (a stage name, a FROM or --from reference) is a named context's. */
  has(name: string | undefined): boolean {
    return name !== undefined && this.entry(name) !== undefined;
  }

  /** The tree a local named context gives `name` (COPY --from, RUN --mount from=), if it is one. */
  tree(name: string): SourceTree | undefined {
    const e = this.entry(name);
    return e?.kind === "tree" ? e.tree : undefined;
  }

  /** The image a named context gives `ref` (FROM, COPY --from), or undefined when no context has that name. */
  image(ref: string, platform: Platform, deps: NamedImageDeps): Promise<StageState> | undefined {
    const e = this.entry(ref);
    if (e === undefined) return undefined;
    if (e.kind === "layout") return layoutState(e, platform, deps);
    if (e.kind === "image") return e.ref === "scratch" ? Promise.resolve(scratchState(platform)) : registryImageState(e.ref, platform, deps);
    return Promise.reject(
      new OcibuildError("BUILD_CONTEXT_UNSUPPORTED", `context '${e.name}' is a local directory, and FROM needs an image`, {
        hint: `COPY --from=${e.name} and RUN --mount from=${e.name} read it; for a base, give the context as docker-image://REF or oci-layout://DIR[:TAG]`,
      }),
    );
  }

  async dispose(): Promise<void> {
    await Promise.all(this.made.map((m) => m.dispose().catch(() => {})));
  }
}
