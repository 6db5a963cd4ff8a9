import { lstat, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { areOpaque, findOpaqueDirs, getXattrs, mknod, mountFs, NativeCallError, setXattrs, umount } from "../../../src/builder/fs/native.js";
import { isRoot } from "../../../testdata/builder/fixtures.js";

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

describe("fs/native: the C library's calls in-process", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-native-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("mknod makes a fifo with exactly the mode asked (no umask)", async () => {
    await mknod(join(dir, "p"), "fifo", 0o666);
    const st = await lstat(join(dir, "p"));
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o666);
  });

  it("mknod on an existing path fails with ROOTFS_MKNOD_FAILED naming the path and the errno", async () => {
    await writeFile(join(dir, "taken"), "");
    const e = (await rejection(mknod(join(dir, "taken"), "fifo", 0o644))) as OcibuildError;
    expect(e.code).toBe("ROOTFS_MKNOD_FAILED");
    expect(e.message).toBe(`mknod ${join(dir, "taken")} failed: File exists`);
    expect(e.details?.errno).toBe("EEXIST");
  });

  it.skipIf(!isRoot)("mknod makes char and block devices with their numbers and setuid-style bits (needs root)", async () => {
    await mknod(join(dir, "null"), "char", 0o4640, 1, 3);
    const st = await lstat(join(dir, "null"));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o4640);
    expect(st.rdev).toBe((1 << 8) | 3);
    // Numbers past 8 bits use the split dev_t layout (major 259, minor 70000).
    await mknod(join(dir, "blk"), "block", 0o600, 259, 70000);
    const b = await lstat(join(dir, "blk"));
    expect(b.isBlockDevice()).toBe(true);
    expect(b.rdev).toBe(Number((259n & 0xfffn) << 8n | (70000n & 0xffn) | ((70000n & ~0xffn) << 12n)));
  });

  it.skipIf(!isRoot)("binary xattrs round-trip; overlay attributes and SELinux labels are hidden from getXattrs, opaque marks seen in both namespaces (needs root)", async () => {
    await mkdir(join(dir, "d/e"), { recursive: true });
    await mkdir(join(dir, "u"));
    await mkdir(join(dir, "n"));
    await writeFile(join(dir, "f"), "");
    await writeFile(join(dir, "g"), "");
    const value = Buffer.from([0, 1, 2, 255, 10]);
    // Past the first buffers offered to the kernel: a 3000-byte value, a name list of ~700 bytes
    // (on another file: ext4 keeps a file's xattrs in one 4 KiB block).
    const big = Buffer.alloc(3000, 7);
    const many = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`user.${String(i).repeat(64)}`, Buffer.from([i])]));
    const failed = await setXattrs([
      { path: join(dir, "f"), name: "trusted.test", value },
      { path: join(dir, "f"), name: "user.big", value: big },
      ...Object.entries(many).map(([name, v]) => ({ path: join(dir, "g"), name, value: v })),
      { path: join(dir, "f"), name: "security.selinux", value: Buffer.from("system_u:object_r:bin_t:s0") },
      { path: join(dir, "d/e"), name: "trusted.overlay.opaque", value: Buffer.from("y") },
      { path: join(dir, "u"), name: "user.overlay.opaque", value: Buffer.from("y") },
      { path: join(dir, "n"), name: "user.overlay.opaque", value: Buffer.from("n") },
      { path: join(dir, "nonexistent"), name: "trusted.test", value },
    ]);
    expect(failed).toEqual([`cannot set xattr trusted.test on ${join(dir, "nonexistent")}: No such file or directory`]);
    const got = await getXattrs([join(dir, "f"), join(dir, "d/e"), join(dir, "d"), join(dir, "u"), join(dir, "nonexistent"), join(dir, "g")]);
    expect([...got.keys()]).toEqual([join(dir, "f"), join(dir, "g")]);
    expect(got.get(join(dir, "f"))).toEqual({ "trusted.test": value, "user.big": big });
    expect(got.get(join(dir, "g"))).toEqual(many);
    expect(await areOpaque(["d", "d/e", "f", "u", "n"].map((p) => join(dir, p)))).toEqual([false, true, false, true, false]);
    expect(await findOpaqueDirs(dir)).toEqual(new Set(["d/e", "u"]));
  });

  it.skipIf(!isRoot)("a failed mount or umount is a NativeCallError with the errno name (needs root)", async () => {
    const m = (await rejection(mountFs("overlay", join(dir, "missing"), "overlay", "lowerdir=/nonexistent"))) as NativeCallError;
    expect(m).toBeInstanceOf(NativeCallError);
    expect(m.errno).toBe("ENOENT");
    expect(m.message).toBe("mount: No such file or directory");
    const u = (await rejection(umount(dir))) as NativeCallError;
    expect(u).toBeInstanceOf(NativeCallError);
    expect(u.errno).toBe("EINVAL");
  });

  it("an aborted signal rejects every call with ROOTFS_ABORTED before it is made", async () => {
    const ac = new AbortController();
    ac.abort();
    const calls = [
      getXattrs([dir], ac.signal),
      setXattrs([{ path: join(dir, "x"), name: "user.x", value: Buffer.from("x") }], ac.signal),
      areOpaque([dir], ac.signal),
      findOpaqueDirs(dir, ac.signal),
      mknod(join(dir, "p"), "fifo", 0o644, 0, 0, ac.signal),
      mountFs("tmpfs", dir, "tmpfs", "", ac.signal),
    ];
    for (const c of calls) expect(((await rejection(c)) as OcibuildError).code).toBe("ROOTFS_ABORTED");
    await expect(lstat(join(dir, "p"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("a batch over many paths runs in slices: the event loop turns meanwhile, and an abort between slices ends it", async () => {
    const paths = Array.from({ length: 100_000 }, (_, i) => join(dir, `absent-${i}`));
    let turns = 0;
    let on = true;
    const spin = () => {
      turns++;
      if (on) setImmediate(spin);
    };
    setImmediate(spin);
    try {
      expect((await getXattrs(paths)).size).toBe(0);
      expect(turns).toBeGreaterThan(2);
      const ac = new AbortController();
      const p = getXattrs(paths, ac.signal);
      setImmediate(() => ac.abort());
      expect(((await rejection(p)) as OcibuildError).code).toBe("ROOTFS_ABORTED");
    } finally {
      on = false;
    }
  });
});
