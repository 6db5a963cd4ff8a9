/**
 * The stat-keyed file hash cache (cache/file-hash.ts): a file whose inode, size, mtime
 * and ctime are those recorded is not read again, also by callers that ask at the same
 * time as the first, while the saved state is still being read.
 */
import { createHash } from "node:crypto";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FileHasher } from "../../src/cache/file-hash.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "ocibuild-file-hash-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

describe("FileHasher", () => {
  it("reads a file whose stat it recorded no more, also for callers that ask together before the saved state is read", async () => {
    const files = ["a", "b", "c"].map((n) => join(dir, n));
    for (const f of files) await writeFile(f, `content of ${f}\n`);
    const state = join(dir, "state", "stat-cache.json");
    const first = new FileHasher(state);
    for (const f of files) expect(await first.hashFile(f, await stat(f))).toBe(sha(`content of ${f}\n`));
    expect(first.bytesRead).toBeGreaterThan(0);
    await first.save();

    const again = new FileHasher(state);
    const stats = await Promise.all(files.map((f) => stat(f)));
    const hashes = await Promise.all(files.map((f, i) => again.hashFile(f, stats[i]!)));
    expect(hashes).toEqual(files.map((f) => sha(`content of ${f}\n`)));
    expect(again.bytesRead).toBe(0);

    // A changed file (another size) is read again.
    await writeFile(files[0]!, "changed\n");
    expect(await again.hashFile(files[0]!, await stat(files[0]!))).toBe(sha("changed\n"));
    expect(again.bytesRead).toBe("changed\n".length);
  });
});
