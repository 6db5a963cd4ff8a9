/** lstat that answers null for a path that is not there (ENOENT, or a parent that is not a directory). */
import { lstatSync, type Stats } from "node:fs";
import { chmod, lstat, mkdir, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { OcibuildError, optionWords } from "../../errors.js";

function missing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

export async function lstatOrNull(p: string): Promise<Stats | null> {
  try {
    return await lstat(p);
  } catch (e) {
    if (missing(e)) return null;
    throw e;
  }
}

export function lstatOrNullSync(p: string): Stats | null {
  try {
    // throwIfNoEntry: a missing path is the common answer in extraction's hot loop,
    // and building the ENOENT error for it cost more than the lstat itself.
    return lstatSync(p, { throwIfNoEntry: false }) ?? null;
  } catch (e) {
    if (missing(e)) return null;
    throw e;
  }
}

/**
 * Make `dir` a directory only its owner (this process's user) can enter: created with
 * mode 0700 (its parents as usual), or narrowed to 0700 when found wider. For the
 * directories that hold extracted trees (setuid files and device nodes as a layer or a
 * RUN made them) and step scratch: another local user must not reach them. One owned
 * by someone else is refused: that user could open it again. True when this call made it.
 */
export async function privateDir(dir: string): Promise<boolean> {
  await mkdir(dirname(dir), { recursive: true });
  const made = await mkdir(dir, { mode: 0o700 }).then(
    () => true,
    (e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
      return false;
    },
  );
  const st = await stat(dir);
  const uid = process.geteuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) {
    throw new OcibuildError("CACHE_DIR_UNSAFE", `${dir} must be a directory owned by uid ${uid}: it holds extracted image trees other users must not reach`, {
      details: { path: dir, uid: st.uid },
      hint: `remove it or choose another with ${optionWords("cacheDir")}`,
    });
  }
  if ((st.mode & 0o077) !== 0) await chmod(dir, 0o700);
  return made;
}
