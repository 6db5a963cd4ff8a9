/** Writing a small file whole or not at all. */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Write `data` to `path` atomically: to a new temp name beside it (`.NAME.tmp-HEX`),
 * then renamed over it, so a reader sees the old file or the new one, never half of
 * one. On failure the temp file is removed and the error is thrown as it was (callers
 * say what it means for them). `makeParent` creates the directory first.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, opts: { signal?: AbortSignal; makeParent?: boolean } = {}): Promise<void> {
  if (opts.makeParent) await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString("hex")}`);
  try {
    await writeFile(tmp, data, { flag: "wx", signal: opts.signal });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}
