/**
 * Content hashes of context files, with a stat cache: (inode, size, mtime, ctime)
 * -> sha256, kept under the cache dir, so an unchanged context is not read again.
 * A changed file changes its ctime, so a stale hash is never reused.
 */
import { writeFileAtomic } from "../fs-atomic.js";
import { createHash } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import type { Stats } from "node:fs";
import { readFile } from "node:fs/promises";
import { pipeline } from "node:stream/promises";

/** Files up to this size are read in one call. */
const SMALL_FILE = 256 * 1024;

interface StatEntry {
  ino: number;
  size: number;
  mtime: number;
  ctime: number;
  hash: string;
}

export class FileHasher {
  private entries = new Map<string, StatEntry>();
  /** The saved state being read: every caller waits for it (an early one then sees its entries). */
  private loading?: Promise<void>;
  private dirty = false;
  /** Bytes actually read (for the report and tests). */
  bytesRead = 0;

  /** `statePath`: where the stat cache lives; undefined keeps it in memory only. */
  constructor(private readonly statePath?: string) {}

  private load(): Promise<void> {
    this.loading ??= this.read();
    return this.loading;
  }

  private async read(): Promise<void> {
    if (!this.statePath) return;
    try {
      const data = JSON.parse(await readFile(this.statePath, "utf8")) as Record<string, StatEntry>;
      for (const [k, v] of Object.entries(data)) this.entries.set(k, v);
    } catch {
      // Missing or unreadable: start empty (it is only a cache).
    }
  }

  /** sha256 hex of a regular file's bytes. */
  async hashFile(path: string, st: Stats, signal?: AbortSignal): Promise<string> {
    await this.load();
    const e = this.entries.get(path);
    if (e && e.ino === st.ino && e.size === st.size && e.mtime === st.mtimeMs && e.ctime === st.ctimeMs) return e.hash;
    const h = createHash("sha256");
    if (st.size <= SMALL_FILE) {
      // Small files (most of a context) in one read: a stream costs several thread-pool round trips per file.
      signal?.throwIfAborted();
      h.update(readFileSync(path));
    } else {
      await pipeline(createReadStream(path, { signal }), async function* (src: AsyncIterable<Buffer>) {
        for await (const chunk of src) h.update(chunk);
      });
    }
    const hash = h.digest("hex");
    this.bytesRead += st.size;
    this.entries.set(path, { ino: st.ino, size: st.size, mtime: st.mtimeMs, ctime: st.ctimeMs, hash });
    this.dirty = true;
    return hash;
  }

  /** Persist the stat cache (temp + rename; the last of two concurrent builds wins, which is fine for a cache). */
  async save(): Promise<void> {
    if (!this.statePath || !this.dirty) return;
    await writeFileAtomic(this.statePath, JSON.stringify(Object.fromEntries(this.entries)), { makeParent: true });
    this.dirty = false;
  }
}
