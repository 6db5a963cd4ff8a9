import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { closeScratchDir, openCacheDir } from "../../src/builder/cache-dir.js";
import { markTopDir } from "../../src/builder/fs/native.js";

/** chattr's flag letters of a directory (lsattr -d), or undefined where the filesystem has none. */
function flagsOf(dir: string): string | undefined {
  try {
    return execFileSync("lsattr", ["-d", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).split(" ")[0];
  } catch {
    return undefined;
  }
}

const probe = flagsOf(tmpdir());
const hasFlags = probe !== undefined && probe.length > 0;

describe("cache directories that hold unrelated trees are marked as tops of hierarchies (chattr +T)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-topdir-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(!hasFlags)("markTopDir sets T and keeps the flags the directory had (skipped where the temp dir's filesystem has no inode flags)", async () => {
    const d = join(dir, "d");
    await mkdir(d);
    const before = flagsOf(d)!;
    expect(before).not.toContain("T");
    expect(await markTopDir(d)).toBe(true);
    const after = flagsOf(d)!;
    expect(after).toContain("T");
    expect(after.replace("T", "-")).toBe(before);
    // Again: nothing to change, still true.
    expect(await markTopDir(d)).toBe(true);
  });

  it.skipIf(!existsSync("/dev/shm"))("markTopDir on a filesystem without the flag (tmpfs) answers false and fails nothing (skipped without /dev/shm)", async () => {
    const d = await mkdtemp("/dev/shm/ocibuild-topdir-");
    try {
      expect(await markTopDir(d)).toBe(false);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it("markTopDir on a path that is not there answers false", async () => {
    expect(await markTopDir(join(dir, "missing"))).toBe(false);
  });

  it.skipIf(!hasFlags)("a new cache directory's build scratch and layer-extraction dirs carry T, the others not (skipped where the temp dir's filesystem has no inode flags)", async () => {
    const cache = join(dir, "cache");
    const scratch = await openCacheDir(cache, undefined);
    expect(flagsOf(join(cache, "tmp"))).toContain("T");
    expect(flagsOf(join(cache, "rootfs", "tmp"))).toContain("T");
    for (const d of ["rootfs", "rootfs/layers", "mounts", "git"]) expect(flagsOf(join(cache, d))).not.toContain("T");
    // The flag is not inherited: the build's own scratch is a plain directory under it.
    expect(flagsOf(scratch)).not.toContain("T");
  });
});

describe("a build's scratch directory", () => {
  it("is removed at the build's end, empty (a fully cached build) or holding a tree", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-scratch-"));
    try {
      const cache = join(dir, "cache");
      const empty = await openCacheDir(cache, undefined);
      const full = await openCacheDir(cache, undefined);
      await mkdir(join(full, "step", "rootfs"), { recursive: true });
      await writeFile(join(full, "step", "rootfs", "f"), "x");
      expect((await readdir(join(cache, "tmp"))).sort()).toEqual([empty, full].map((d) => d.slice(join(cache, "tmp").length + 1)).sort());
      await closeScratchDir(empty);
      await closeScratchDir(full);
      expect(await readdir(join(cache, "tmp"))).toEqual([]);
      // Already gone: nothing to do, no error.
      await closeScratchDir(empty);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
