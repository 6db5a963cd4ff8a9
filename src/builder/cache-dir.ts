/**
 * Where a build keeps its cache when no directory is given: $XDG_CACHE_HOME/ocibuild,
 * else ~/.cache/ocibuild. A user whose HOME does not exist or cannot be written (a
 * service account with HOME=/nonexistent, a read-only home in a CI pod) still
 * builds: the cache goes to a private directory under the temp dir for this
 * build, with a warning that says how to keep it.
 */
import { rmdirSync, statSync } from "node:fs";
import { lstat, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { isOcibuildError, optionWords } from "../errors.js";
import { errnoOf, makeDirs, pathError } from "../user-path.js";
import { markTopDir } from "./fs/native.js";
import { privateDir } from "./fs/util.js";

export function defaultCacheDir(env: Record<string, string | undefined>): string {
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "ocibuild");
  return join(env.HOME ?? "/root", ".cache", "ocibuild");
}

/** Errors that say "this place is not ours to write", as opposed to a failing disk. */
const NOT_WRITABLE: ReadonlySet<string> = new Set(["EACCES", "EPERM", "EROFS", "ENOENT", "ENOTDIR"]);

/**
 * A temp-dir cache for this user: `ocibuild-cache-UID`, reused across builds when it
 * is a real directory that belongs to this user and nobody else can write;
 * otherwise (another user made that name first) a fresh private directory.
 */
async function tempCacheDir(env: Record<string, string | undefined>): Promise<string> {
  const base = env.TMPDIR || tmpdir();
  const uid = process.getuid?.() ?? 0;
  // In rootless mode this process is 0: the name carries the user's real uid.
  const dir = join(base, `ocibuild-cache-${env.OCIBUILD_HOST_UID ?? uid}`);
  await mkdir(dir, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== "EEXIST") throw e;
  });
  const st = await lstat(dir);
  if (st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0) return dir;
  return mkdtemp(join(base, "ocibuild-cache-"));
}

/**
 * The cache directory for a build: the one given (its errors are the caller's to
 * report), or the default, falling back to the temp dir when the default cannot be
 * made. `onWarning` hears about a fallback.
 */
export async function resolveCacheDir(given: string | undefined, env: Record<string, string | undefined>, onWarning: (message: string) => void): Promise<string> {
  if (given !== undefined) return resolve(given);
  const preferred = resolve(defaultCacheDir(env));
  try {
    await makeDirs(preferred);
    return preferred;
  } catch (e) {
    const code = errnoOf(e) ?? "";
    if (!NOT_WRITABLE.has(code)) throw e;
    const fallback = await tempCacheDir(env);
    onWarning(
      `cannot create the cache directory ${preferred} (${code}): this build caches in ${fallback} instead; ` +
        `set XDG_CACHE_HOME or ${optionWords("cacheDir")} to keep the cache where you want it`,
    );
    return fallback;
  }
}

/**
 * The cache directories that hold extracted trees (pulled layers and step results, with
 * their setuid files and device nodes), step scratch, cache mounts and git mirrors:
 * mode 0700, so no other local user can reach what they hold (a setuid-root shell a
 * base layer or a `RUN chmod 4755` planted), wherever the cache directory is.
 */
const PRIVATE_CACHE_DIRS = ["tmp", "rootfs", "rootfs/layers", "rootfs/tmp", "mounts", "git"];

/**
 * Those of them whose subdirectories are unrelated trees made and removed whole (this
 * build's scratch with its steps' trees; layers being extracted): marked as tops of
 * directory hierarchies when made (native.ts markTopDir), so each tree is created in
 * a block group of its own.
 */
const TOP_DIRS: ReadonlySet<string> = new Set(["tmp", "rootfs/tmp"]);

/**
 * Whether an earlier build left `cacheDir` as openCacheDir makes it: each private
 * directory there, this user's and closed to others (privateDir's test). One blocking
 * stat each, ~0.1 ms in all, where making sure of them through the thread pool (a mkdir,
 * a stat and a mkdir of the parent, each) took ~2-3 ms of every fully cached rebuild.
 */
function readyCacheDir(cacheDir: string): boolean {
  const uid = process.geteuid?.();
  for (const d of PRIVATE_CACHE_DIRS) {
    const st = statSync(join(cacheDir, d), { throwIfNoEntry: false });
    if (st === undefined || !st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) return false;
  }
  return true;
}

/**
 * Creates the cache directory and this build's scratch directory in it. A cache
 * directory that cannot be written (read-only, under a file, an unwritable HOME)
 * is the user's to fix: CACHE_DIR_UNWRITABLE names it and the errno.
 */
export async function openCacheDir(cacheDir: string, defaultFrom: Record<string, string | undefined> | undefined): Promise<string> {
  try {
    if (!readyCacheDir(cacheDir)) {
      await makeDirs(cacheDir);
      for (const d of PRIVATE_CACHE_DIRS) {
        if ((await privateDir(join(cacheDir, d))) && TOP_DIRS.has(d)) await markTopDir(join(cacheDir, d));
      }
    }
    return await mkdtemp(join(cacheDir, "tmp", "build-"));
  } catch (e) {
    if (isOcibuildError(e)) throw e;
    const from = defaultFrom === undefined ? "" : `it is the default, under ${defaultFrom.XDG_CACHE_HOME ? "XDG_CACHE_HOME" : "HOME"}; `;
    throw pathError("CACHE_DIR_UNWRITABLE", "cannot use the cache directory", cacheDir, e, `${from}choose a writable one with ${optionWords("cacheDir")}`);
  }
}

/**
 * Removes this build's scratch directory. A fully cached build left it empty: one rmdir,
 * not rm's recursive walk (which loads a module of its own and makes four thread-pool
 * calls for an empty directory: ~1 ms of a fully cached rebuild).
 */
export async function closeScratchDir(dir: string): Promise<void> {
  try {
    rmdirSync(dir);
  } catch {
    await rm(dir, { recursive: true, force: true });
  }
}
