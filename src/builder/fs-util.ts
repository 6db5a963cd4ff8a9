/** lstat that answers null for a path that is not there (ENOENT, or a parent that is not a directory). */
import { lstatSync, type Stats } from "node:fs";
import { lstat } from "node:fs/promises";

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
