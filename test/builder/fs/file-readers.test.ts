/**
 * The workers that read a large snapshot's files: what they answer for each kind of
 * path, and that a worker which cannot load its C library calls leaves every file to
 * the main thread instead of failing the snapshot.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Field, FileReaders, FileStatus, fieldOf } from "../../../src/builder/fs/file-readers.js";
import { libc } from "../../../src/builder/fs/libc.js";
import { mknod } from "../../../src/builder/fs/native.js";

const SKIP = ["trusted.overlay.", "user.overlay.", "security.selinux"];

// On one core there are no workers (FileReaders.start says so): every file is read on the main thread.
describe.skipIf(availableParallelism() < 2)("file readers (worker threads; needs two cores)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-readers-"));
    await mkdir(join(dir, "d"));
    await writeFile(join(dir, "d/small"), "hello");
    await writeFile(join(dir, "d/big"), Buffer.alloc(300 * 1024, 1));
    await symlink("small", join(dir, "d/link"));
    await mknod(join(dir, "d/fifo"), "fifo", 0o644);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads small files, leaves large ones to the tar, and every other kind of path to the main thread", async () => {
    const readers = FileReaders.start(libc.koffiPath, SKIP);
    expect(readers).toBeDefined();
    try {
      const rels = ["d/small", "d/big", "d/link", "d/fifo", "d", "d/missing"];
      const b = (await readers!.read(dir, rels.map((r) => `${r}\0`).join(""), undefined))!;
      expect(b).toBeDefined();
      const status = rels.map((_, i) => fieldOf(b, i, Field.STATUS));
      expect(status).toEqual([FileStatus.INLINE, FileStatus.STAT, FileStatus.FALLBACK, FileStatus.FALLBACK, FileStatus.FALLBACK, FileStatus.FALLBACK]);
      const at = fieldOf(b, 0, Field.CONTENT_AT);
      expect(b.content.subarray(at, at + 5).toString()).toBe("hello");
      expect(fieldOf(b, 1, Field.SIZE)).toBe(300 * 1024);

      // Asked to pack: the small file comes as a whole tar entry (header, content, padding).
      const p = (await readers!.read(dir, "d/small\0", { epoch: undefined }))!;
      expect(fieldOf(p, 0, Field.STATUS)).toBe(FileStatus.PACKED);
      const h = p.content.subarray(fieldOf(p, 0, Field.CONTENT_AT));
      expect(h.subarray(0, 7).toString()).toBe("d/small");
      expect(h.subarray(512, 517).toString()).toBe("hello");
      expect(p.content.length).toBe(1024);
    } finally {
      readers!.close();
    }
  });

  it("answers no batch when its C library calls cannot be loaded, so the files are read on the main thread", async () => {
    const readers = FileReaders.start(join(dir, "no-such-koffi.node"), SKIP)!;
    try {
      expect(await readers.read(dir, "d/small\0", undefined)).toBeUndefined();
    } finally {
      readers.close();
    }
  });

  it("gives no more batches to a worker that exited: the others read them", { timeout: 10_000 }, async () => {
    const readers = FileReaders.start(libc.koffiPath, SKIP)!;
    try {
      const workers = (readers as unknown as { workers: { terminate(): Promise<number> }[] }).workers;
      expect(workers.length).toBeGreaterThanOrEqual(2);
      await workers[0]!.terminate();
      // Before, every other batch went to the dead worker and was never answered.
      for (let i = 0; i < 4; i++) {
        const b = await readers.read(dir, "d/small\0", undefined);
        expect(b && fieldOf(b, 0, Field.STATUS)).toBe(FileStatus.INLINE);
      }
    } finally {
      readers.close();
    }
  });

  it("answers no batch after it is closed", async () => {
    const readers = FileReaders.start(libc.koffiPath, SKIP)!;
    readers.close();
    expect(await readers.read(dir, "d/small\0", undefined)).toBeUndefined();
  });
});
