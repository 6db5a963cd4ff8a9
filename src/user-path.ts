/**
 * Filesystem failures on paths the user chose (outputs, digest and metadata
 * files, the cache directory) are the user's to fix, not bugs: a coded error that
 * names the path and the real errno, never a temp file's name. Node's recursive
 * mkdir reports ENOENT where the kernel said EROFS or EACCES, so `makeDirs` finds
 * the real one; clean-up never throws, so it cannot hide the failure it follows;
 * `checkWritable` tells before a build whether an output can be written at all.
 */
import { constants } from "node:fs";
import { access, mkdir, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { type ErrorCode, OcibuildError } from "./errors.js";

const REASONS: Record<string, string> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  ENOTDIR: "a part of the path is not a directory",
  ENOENT: "no such file or directory",
  EISDIR: "it is a directory",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  ENAMETOOLONG: "file name too long",
  ELOOP: "too many levels of symbolic links",
};

export function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === "string" && /^E[A-Z]+$/.test(code) ? code : undefined;
}

function errnoError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${REASONS[code] ?? code}`), { code });
}

/** Codes of errors that are a write to the filesystem failing (their cause has the errno). */
const WRITE_CODES: ReadonlySet<string> = new Set(["LAYOUT_WRITE_FAILED", "OUTPUT_WRITE_FAILED"]);

/** The errno-carrying error under `err`: itself, or the cause of a failed write; not a network error's. */
function rootErrno(err: unknown): unknown {
  let e = err;
  for (let depth = 0; e instanceof OcibuildError && depth < 5; depth++) {
    if (!WRITE_CODES.has(e.code)) return undefined;
    e = e.cause;
  }
  return errnoOf(e) ? e : undefined;
}

/**
 * `${action} ${path}: EROFS (read-only file system)` with `code`, the path in
 * `file` and `details`. Any other OcibuildError (an abort, a digest mismatch, a
 * registry failure while streaming a layer) is returned as it is.
 */
export function pathError(code: ErrorCode, action: string, path: string, err: unknown, hint?: string): OcibuildError {
  const cause = rootErrno(err);
  if (cause === undefined) {
    if (err instanceof OcibuildError) return err;
    return new OcibuildError(code, `${action} ${path}: ${err instanceof Error ? err.message : String(err)}`, { file: path, cause: err, hint, details: { path } });
  }
  const errno = errnoOf(cause)!;
  return new OcibuildError(code, `${action} ${path}: ${errno} (${REASONS[errno] ?? (cause as Error).message})`, { file: path, cause: err, hint, details: { path, errno } });
}

const exists = (p: string) => stat(p).then(() => true, () => false);

/** mkdir -p, failing with the errno of the first directory it could not create. */
export async function makeDirs(path: string): Promise<void> {
  try {
    await mkdir(path, { recursive: true });
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
    let missing = path;
    while (dirname(missing) !== missing && !(await exists(dirname(missing)))) missing = dirname(missing);
    await mkdir(missing); // throws what the kernel said (EROFS, EACCES, ...)
    await mkdir(path, { recursive: true });
  }
}

/** rm for clean-up after a failure: never throws, so the failure is the one reported. */
export async function removeQuietly(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
  await rm(path, { force: true, recursive: opts.recursive ?? false }).catch(() => {});
}

/**
 * Throws (through `fail`, given the errno error) unless `path` can be written: a
 * file goes into an existing, writable directory (it is written beside and renamed
 * into place); a directory exists and is writable, or its nearest existing
 * ancestor is a writable directory to create it in.
 */
export async function checkWritable(path: string, kind: "file" | "dir", fail: (err: unknown) => Error): Promise<void> {
  const st = await stat(path).catch((e: unknown) => e as Error);
  if (!(st instanceof Error)) {
    if (kind === "file" && st.isDirectory()) throw fail(errnoError("EISDIR"));
    if (kind === "dir" && !st.isDirectory()) throw fail(errnoError("ENOTDIR"));
  } else if (errnoOf(st) !== "ENOENT") throw fail(st);
  let dir = kind === "dir" && !(st instanceof Error) ? path : dirname(path);
  if (kind === "dir") while (dirname(dir) !== dir && !(await exists(dir))) dir = dirname(dir);
  const ds = await stat(dir).catch((e: unknown) => e as Error);
  if (ds instanceof Error) throw fail(ds);
  if (!ds.isDirectory()) throw fail(errnoError("ENOTDIR"));
  await access(dir, constants.W_OK | constants.X_OK).catch((e: unknown) => {
    throw fail(e);
  });
}
