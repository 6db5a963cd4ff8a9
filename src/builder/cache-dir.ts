/**
 * Where a build keeps its cache when no directory is given: $XDG_CACHE_HOME/ocibuild,
 * else ~/.cache/ocibuild. A user whose HOME does not exist or cannot be written (a
 * service account with HOME=/nonexistent, a read-only home in a CI pod) still
 * builds: the cache goes to a private directory under the temp dir for this
 * build, with a warning that says how to keep it.
 */
import { lstat, mkdir, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { errnoOf, makeDirs } from "../user-path.js";

export function defaultCacheDir(env: Record<string, string | undefined>): string {
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "ocibuild");
  return join(env.HOME ?? "/root", ".cache", "ocibuild");
}

/** Errors that say "this place is not ours to write", as opposed to a failing disk. */
const NOT_WRITABLE = new Set(["EACCES", "EPERM", "EROFS", "ENOENT", "ENOTDIR"]);

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
        "set XDG_CACHE_HOME or pass --cache-dir to keep the cache where you want it",
    );
    return fallback;
  }
}
