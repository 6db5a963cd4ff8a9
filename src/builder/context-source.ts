/**
 * Where a build context comes from, as docker build and kaniko accept it: a local
 * directory; a tar archive (plain or gzip) from a file (`tar://PATH`, kaniko's
 * spelling) or from stdin (`-`), with the Dockerfile inside; a bare Dockerfile on
 * stdin (`-`, no context, as `docker build - < Dockerfile`); or a git repository
 * (`https://host/repo.git#ref:subdir`, `git://...`, `git@host:repo`, fetched with the
 * same code as ADD's git sources, into the same cache).
 *
 * A non-directory context becomes a private temp directory the build reads like any
 * other and removes when it ends. Archives are extracted by the layer extractor, so
 * hostile archives meet the same limits and path confinement as pulled layers.
 */
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createReadStream } from "node:fs";
import { PassThrough } from "node:stream";
import { OcibuildError } from "../errors.js";
import { extractLayer } from "./fs/extract.js";
import { checkoutGit, parseGitSource, type GitSource } from "./steps/git.js";

export type ContextSpec =
  | { readonly kind: "dir"; readonly path: string }
  | { readonly kind: "tar"; readonly path: string }
  | { readonly kind: "stdin" }
  | { readonly kind: "git"; readonly source: GitSource; readonly text: string };

/** Reads a context argument: `-`, `tar://PATH`, a git URL, `dir://PATH` or a path. */
export function parseContextSpec(text: string): ContextSpec {
  if (text === "-") return { kind: "stdin" };
  if (text.startsWith("tar://")) return { kind: "tar", path: text.slice("tar://".length) };
  if (text.startsWith("dir://")) return { kind: "dir", path: text.slice("dir://".length) };
  const git = parseGitSource(text);
  if (git) return { kind: "git", source: git, text };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw new OcibuildError("BUILD_CONTEXT_UNSUPPORTED", `context ${text}: not a directory, tar://ARCHIVE, - (stdin) or a git URL (https://host/repo.git#ref:subdir)`);
  }
  return { kind: "dir", path: text };
}

/** A context must be a directory; checked first, so a wrong path is not blamed on a COPY source, or missed. `what` names it ("the build context DIR"). */
export async function checkContextDir(dir: string, what: string): Promise<void> {
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => e);
  if (!(st instanceof Error) && st.isDirectory()) return;
  const errno = st instanceof Error ? (st.code ?? st.message) : "ENOTDIR";
  const how = errno === "ENOENT" ? "does not exist" : errno === "ENOTDIR" ? "is not a directory" : "cannot be read";
  throw new OcibuildError("BUILD_CONTEXT_NOT_FOUND", `${what} ${how} (${errno})`, { file: dir, cause: st instanceof Error ? st : undefined, details: { errno } });
}

/** A context ready to build from. */
export interface MaterializedContext {
  readonly dir: string;
  /** A Dockerfile that came on stdin instead of a context (no context then: an empty one). */
  readonly dockerfileText?: string;
  /** For provenance: the context's URL and its immutable digest (a git commit). */
  readonly uri?: string;
  readonly digest?: Readonly<Record<string, string>>;
  /** Removes what was made for it (nothing for a directory). */
  dispose(): Promise<void>;
}

export interface MaterializeOptions {
  /** Where git repositories are cached (shared with ADD's). */
  gitCacheDir: string;
  stdin?: NodeJS.ReadableStream;
  maxSize?: number;
  signal?: AbortSignal;
}

const TAR_MAGIC_OFFSET = 257;

/** Reads the first bytes of `input` without losing them: the head, and a stream of everything. */
async function peek(input: NodeJS.ReadableStream, want: number): Promise<{ head: Buffer; stream: NodeJS.ReadableStream }> {
  const chunks: Buffer[] = [];
  let size = 0;
  const it = (input as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
  while (size < want) {
    const r = await it.next();
    if (r.done) break;
    const b = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
    chunks.push(b);
    size += b.length;
  }
  const head = Buffer.concat(chunks);
  const out = new PassThrough();
  out.write(head);
  void (async () => {
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) if (!out.write(r.value)) await new Promise((res) => out.once("drain", res));
      out.end();
    } catch (e) {
      out.destroy(e as Error);
    }
  })();
  return { head, stream: out };
}

function looksLikeArchive(head: Buffer): boolean {
  if (head[0] === 0x1f && head[1] === 0x8b) return true;
  return head.length >= TAR_MAGIC_OFFSET + 5 && head.subarray(TAR_MAGIC_OFFSET, TAR_MAGIC_OFFSET + 5).toString("latin1") === "ustar";
}

async function scratchDir(): Promise<{ dir: string; dispose: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "ocibuild-context-"));
  return { dir, dispose: () => rm(dir, { recursive: true, force: true }) };
}

async function fromArchive(stream: NodeJS.ReadableStream, name: string, opts: MaterializeOptions): Promise<MaterializedContext> {
  const s = await scratchDir();
  try {
    const root = join(s.dir, "context");
    await mkdir(root, { mode: 0o755 });
    await extractLayer(root, stream, { signal: opts.signal, maxSize: opts.maxSize, layer: `the context archive ${name}`, skipRootEntry: true, owner: { uid: 0, gid: 0 } });
    return { dir: root, dispose: s.dispose };
  } catch (e) {
    await s.dispose();
    throw e;
  }
}

async function fromStdin(opts: MaterializeOptions): Promise<MaterializedContext> {
  if (!opts.stdin) throw new OcibuildError("BUILD_CONTEXT_NOT_FOUND", "the context is - (stdin), but no input stream was given");
  const { head, stream } = await peek(opts.stdin, TAR_MAGIC_OFFSET + 8);
  if (looksLikeArchive(head)) return fromArchive(stream, "(stdin)", opts);
  // A Dockerfile alone: docker builds it with an empty context.
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  const s = await scratchDir();
  return { dir: s.dir, dockerfileText: Buffer.concat(chunks).toString("utf8"), dispose: s.dispose };
}

async function fromGit(spec: Extract<ContextSpec, { kind: "git" }>, opts: MaterializeOptions): Promise<MaterializedContext> {
  const s = await scratchDir();
  try {
    const co = await checkoutGit(spec.source, opts.gitCacheDir, s.dir, false, opts.signal, `context ${spec.text}`);
    const uri = `${spec.source.url}${spec.source.ref ? `#${spec.source.ref}` : ""}`;
    return { dir: co.dir, uri, digest: { sha1: co.commit }, dispose: s.dispose };
  } catch (e) {
    await s.dispose();
    throw e;
  }
}

/** Makes `spec` a directory the build can read. */
export async function materializeContext(spec: ContextSpec, opts: MaterializeOptions): Promise<MaterializedContext> {
  switch (spec.kind) {
    case "dir":
      return { dir: spec.path, dispose: async () => {} };
    case "stdin":
      return fromStdin(opts);
    case "git":
      return fromGit(spec, opts);
    case "tar": {
      const input = createReadStream(spec.path);
      const opened = await new Promise<NodeJS.ErrnoException | undefined>((res) => input.once("open", () => res(undefined)).once("error", res));
      if (opened) throw new OcibuildError("BUILD_CONTEXT_NOT_FOUND", `the context archive ${spec.path} cannot be read (${opened.code ?? opened.message})`, { file: spec.path });
      return fromArchive(input, spec.path, opts);
    }
  }
}

