/**
 * The contexts a build reads, opened before it and closed after it however it ends
 * (success, failure, abort): the main context made a directory (context-source.ts:
 * a directory, tar://ARCHIVE, a git URL, or `-` read from a stream), its Dockerfile
 * found (in a context that was not a directory, a relative path is inside it, as
 * docker build has it), and the named contexts (named-contexts.ts).
 */
import { isAbsolute, join, resolve } from "node:path";
import { materializeContext, parseContextSpec, type ContextSpec, type MaterializedContext } from "./context-source.js";
import { resolveFollow } from "./fs/path.js";
import { NamedContexts } from "./named-contexts.js";
import { cleanSourcePath } from "./sources.js";

/** Where the build context came from, for provenance: a git context's URL and commit. */
export interface ContextSource {
  uri: string;
  digest: Record<string, string>;
}

/** What the build needs to open its contexts (a subset of BuildOptions). */
export interface ContextOptions {
  context: string;
  contextStream?: NodeJS.ReadableStream;
  dockerfile?: string;
  dockerfileText?: string;
  buildContexts?: Readonly<Record<string, string>>;
  /** The bound an archive's unpacked size must keep to (a gzip bomb on stdin). */
  maxLayerSize?: number;
  signal?: AbortSignal;
}

/** The Dockerfile: its text (given, or alone on stdin), or the path to read it from; `name` for messages. */
export type DockerfileSource = { text: string; name: string; path?: undefined } | { path: string; name: string; text?: undefined };

export interface BuildContexts {
  /** The main context as a directory. */
  readonly dir: string;
  readonly dockerfile: DockerfileSource;
  /** The main context as given (a directory, tar://PATH, a git URL, "-"): how the cache knows the project from build to build. */
  readonly id: string;
  /** Set for a git context: its URL and commit. */
  readonly source?: ContextSource;
  readonly named: NamedContexts;
  /** Removes what was made for the contexts (extracted archives, git checkouts). */
  dispose(): Promise<void>;
}

/** The Dockerfile to read for the main context. */
async function dockerfileOf(spec: ContextSpec, main: MaterializedContext, opts: ContextOptions): Promise<DockerfileSource> {
  const text = opts.dockerfileText ?? main.dockerfileText;
  if (text !== undefined) return { text, name: "Dockerfile" };
  const name = opts.dockerfile ?? "Dockerfile";
  if (spec.kind === "dir") return { path: resolve(opts.dockerfile ?? join(main.dir, "Dockerfile")), name };
  if (isAbsolute(name)) return { path: name, name };
  // Inside the context, symlinks resolved within it: a Dockerfile in an archive cannot point at the host's files.
  const comps = cleanSourcePath(name);
  const found = await resolveFollow(main.dir, comps).catch(() => null);
  return { path: found?.hostPath ?? join(main.dir, ...comps), name };
}

function idOf(spec: ContextSpec, dir: string): string {
  if (spec.kind === "dir") return dir;
  if (spec.kind === "tar") return `tar://${resolve(spec.path)}`;
  return spec.kind === "git" ? spec.text : "-";
}

/** Opens the main and the named contexts; git repositories are fetched into `gitCacheDir` (shared with ADD's). */
export async function openContexts(opts: ContextOptions, gitCacheDir: string): Promise<BuildContexts> {
  const parsed = parseContextSpec(opts.context);
  const spec: ContextSpec = parsed.kind === "dir" ? { kind: "dir", path: resolve(parsed.path) } : parsed;
  const main = await materializeContext(spec, { gitCacheDir, stdin: opts.contextStream, maxSize: opts.maxLayerSize, signal: opts.signal });
  try {
    const dockerfile = await dockerfileOf(spec, main, opts);
    const named = await NamedContexts.open(opts.buildContexts ?? {}, { gitCacheDir, maxSize: opts.maxLayerSize, signal: opts.signal });
    const source = main.uri !== undefined && main.digest !== undefined ? { source: { uri: main.uri, digest: { ...main.digest } } } : {};
    return {
      dir: main.dir,
      dockerfile,
      id: idOf(spec, main.dir),
      ...source,
      named,
      dispose: async () => {
        await named.dispose();
        await main.dispose();
      },
    };
  } catch (e) {
    await main.dispose();
    throw e;
  }
}
