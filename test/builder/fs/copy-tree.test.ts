/**
 * copyTree's metadata, with its fast path for directories it made itself (no lookup
 * of what is there, no chown or chmod that would change nothing) checked against the
 * rules: the plan's owner (else the source's), the mode with --chmod, the source's
 * times; under a setgid directory, into existing directories, over existing files.
 */
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { lstatSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseChmod } from "../../../src/builder/fs/chmod.js";
import { copyEntry, copyTree, type CopyPlan } from "../../../src/builder/fs/copy-tree.js";
import type { SourceTree } from "../../../src/builder/sources.js";
import { isRoot } from "../../helpers/tools.js";

let base: string;
let src: string;
const T = new Date("2020-05-06T07:08:09Z");

beforeEach(async () => {
  base = await mkdtemp(join(tmpdir(), "ocibuild-copytree-"));
  src = join(base, "src");
  await mkdir(join(src, "d/e"), { recursive: true });
  await writeFile(join(src, "d/plain"), "plain");
  await writeFile(join(src, "d/e/suid"), "suid");
  await writeFile(join(src, "d/e/private"), "private");
  await symlink("plain", join(src, "d/link"));
  await chmod(join(src, "d/e/suid"), 0o4755);
  await chmod(join(src, "d/e/private"), 0o600);
  await chmod(join(src, "d/e"), 0o750);
  for (const p of ["d/plain", "d/e/suid", "d/e/private", "d/e", "d"]) await utimes(join(src, p), T, T);
  if (isRoot) await chown(join(src, "d/e/private"), 1234, 5678);
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function copy(dst: string, plan: Partial<CopyPlan> = {}): Promise<void> {
  const tree: SourceTree = { root: src, label: "test" };
  const m = { rel: "d", realRel: "d", hostPath: join(src, "d"), stats: lstatSync(join(src, "d")) };
  await copyTree(tree, m, dst, { contextSource: false, ...plan });
}

async function meta(p: string) {
  const st = await lstat(p);
  return { uid: st.uid, gid: st.gid, mode: (st.mode & 0o7777).toString(8), mtime: st.mtime.getTime() };
}

describe.skipIf(!isRoot)("copyTree metadata (needs root)", () => {
  it("into a new directory: source owners and modes kept, times copied", async () => {
    const dst = join(base, "new");
    await mkdir(dst);
    await copy(dst);
    expect(await meta(join(dst, "plain"))).toEqual({ uid: 0, gid: 0, mode: "644", mtime: T.getTime() });
    expect(await meta(join(dst, "e/suid"))).toEqual({ uid: 0, gid: 0, mode: "4755", mtime: T.getTime() });
    expect(await meta(join(dst, "e/private"))).toEqual({ uid: 1234, gid: 5678, mode: "600", mtime: T.getTime() });
    expect(await meta(join(dst, "e"))).toEqual({ uid: 0, gid: 0, mode: "750", mtime: T.getTime() });
    expect(await readlink(join(dst, "link"))).toBe("plain");
    expect(await readFile(join(dst, "e/private"), "utf8")).toBe("private");
  });

  it("with an owner and --chmod, under a setgid directory of another group", async () => {
    const dst = join(base, "sg");
    await mkdir(dst);
    await chown(dst, 0, 4321);
    await chmod(dst, 0o2775);
    await copy(dst, { owner: { uid: 0, gid: 0 }, modeFn: parseChmod("0640") });
    // New entries there would get group 4321 and, for directories, the setgid bit: the copy sets 0:0 and the asked mode.
    for (const p of ["plain", "e/suid", "e/private"]) expect(await meta(join(dst, p))).toEqual({ uid: 0, gid: 0, mode: "640", mtime: T.getTime() });
    expect((await meta(join(dst, "e"))).gid).toBe(0);
    const link = await lstat(join(dst, "link"));
    expect([link.uid, link.gid]).toEqual([0, 0]);
    // Without --chmod, a setuid file keeps its bits although a chown was needed (chown clears them).
    const dst2 = join(base, "sg2");
    await mkdir(dst2);
    await chown(dst2, 0, 4321);
    await chmod(dst2, 0o2775);
    await copy(dst2, { owner: { uid: 0, gid: 0 } });
    expect(await meta(join(dst2, "e/suid"))).toEqual({ uid: 0, gid: 0, mode: "4755", mtime: T.getTime() });
  });

  it("into existing directories and over existing files: replaced, with the same metadata", async () => {
    const dst = join(base, "old");
    await mkdir(join(dst, "e"), { recursive: true });
    await writeFile(join(dst, "plain"), "old content that is longer");
    await chmod(join(dst, "plain"), 0o777);
    await chown(join(dst, "plain"), 99, 99);
    await writeFile(join(dst, "e/suid"), "old");
    await copy(dst, { owner: { uid: 7, gid: 8 } });
    expect(await readFile(join(dst, "plain"), "utf8")).toBe("plain");
    expect(await meta(join(dst, "plain"))).toEqual({ uid: 7, gid: 8, mode: "644", mtime: T.getTime() });
    expect(await meta(join(dst, "e/suid"))).toEqual({ uid: 7, gid: 8, mode: "4755", mtime: T.getTime() });
    expect(await meta(join(dst, "e/private"))).toEqual({ uid: 7, gid: 8, mode: "600", mtime: T.getTime() });
  });
});

describe("copyEntry's file copy", () => {
  it("copies contents of every size exactly (empty, odd, past the blocking-copy size)", async () => {
    const dst = join(base, "sizes");
    await mkdir(dst);
    for (const size of [0, 1, 4097, 65537, (1 << 20) + 3]) {
      const data = Buffer.alloc(size, size % 251);
      for (let i = 0; i < size; i += 997) data[i] = i % 256;
      const from = join(src, `f${size}`);
      await writeFile(from, data);
      await copyEntry(from, lstatSync(from), join(dst, `f${size}`), { contextSource: true });
      expect((await readFile(join(dst, `f${size}`))).equals(data)).toBe(true);
    }
  });

  it("never follows a symlink put where the walk saw a regular file (the file outside is not copied)", async () => {
    const outside = join(base, "outside-secret");
    await writeFile(outside, "secret");
    const seen = lstatSync(join(src, "d/plain"));
    await rm(join(src, "d/plain"));
    await symlink(outside, join(src, "d/plain"));
    const dst = join(base, "swapped");
    await mkdir(dst);
    await expect(copyEntry(join(src, "d/plain"), seen, join(dst, "plain"), { contextSource: true })).rejects.toMatchObject({ code: "ELOOP" });
    expect(lstatSync(join(dst, "plain"), { throwIfNoEntry: false })).toBeUndefined();
  });
});
