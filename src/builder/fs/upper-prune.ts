/**
 * An upperdir kept as a layer's directory loses the mount points the sandbox made in it.
 */
import { rmdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { lstatOrNullSync } from "./util.js";

/**
 * Remove the excluded mount points from an upperdir that is kept as the layer's
 * directory, with the same rule as snapshotChanges: excluded files go; an
 * excluded directory goes only when nothing else is left in it. Deepest first.
 * Never follows a symlink: a path whose parent is not a real directory (the RUN
 * replaced it) is left alone.
 */
export function pruneExcluded(upper: string, exclude: string[]): void {
  const paths = [...new Set(exclude.map((p) => p.split("/").filter((c) => c !== "" && c !== ".")))]
    .filter((c) => c.length > 0 && !c.includes(".."))
    .sort((a, b) => b.length - a.length);
  // Blocking calls: a few paths, one syscall each, made while the layer's gzip holds the thread pool.
  for (const comps of paths) {
    let real = true;
    for (let i = 1; i < comps.length && real; i++) {
      const st = lstatOrNullSync(join(upper, ...comps.slice(0, i)));
      real = st !== null && st.isDirectory();
    }
    if (!real) continue;
    const hostPath = join(upper, ...comps);
    const st = lstatOrNullSync(hostPath);
    if (st === null) continue;
    if (st.isDirectory()) {
      try {
        rmdirSync(hostPath);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
      }
    } else unlinkSync(hostPath);
  }
}
