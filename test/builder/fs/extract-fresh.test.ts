/**
 * Into a root that starts empty, extractLayer answers "what is at this path" from
 * what it has made so far instead of an lstat per entry, and skips chown where
 * creating the file already gave it the layer's owner. These layers make entries
 * depend on earlier ones (same path twice, links to what was just written, a
 * file then a directory of one name, symlinks then writes through them), in a
 * fresh root and on top of an existing one, where every check goes to the disk.
 */
import { lstat, mkdir, readdir, readFile, readlink, rm, stat, chmod, chown, symlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { extractLayer } from "../../../src/builder/fs/extract.js";
import { isRoot, makeTar, streamOf, type TarSpec, makeCanaryRoot } from "../../../testdata/builder/fixtures.js";

let base: string;
let root: string;
let outside: string;

beforeEach(async () => {
  ({ base, root, outside } = await makeCanaryRoot("ocibuild-fresh-"));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A directory of small files ahead of the entries under test (more state for the bookkeeping to get wrong). */
function filler(dir: string, n = 40): TarSpec[] {
  return Array.from({ length: n }, (_, i) => ({ name: `${dir}/fill${i}`, content: `f${i}`.repeat(i + 1) }));
}

async function extract(specs: TarSpec[], opts: { gzip?: boolean; whiteouts?: "apply" | "overlay" } = {}): Promise<void> {
  await extractLayer(root, streamOf(await makeTar(specs, opts.gzip ?? false)), { whiteouts: opts.whiteouts });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (e === undefined) return "NO ERROR";
  expect(e).toBeInstanceOf(OcibuildError);
  return (e as OcibuildError).code;
}

async function expectOutsideUntouched(): Promise<void> {
  expect(await readdir(outside)).toEqual(["canary"]);
  expect(await readFile(join(outside, "canary"), "utf8")).toBe("safe");
}

describe("extractLayer into a fresh root: hostile layers", () => {
  it.each([false, true])("a symlink made after many files cannot be written through (gzip=%s)", async (gzip) => {
    const code = await codeOf(
      extract([...filler("d"), { name: "evil", type: "symlink", linkname: "../outside" }, { name: "evil/canary", content: "pwned" }], { gzip }),
    );
    expect(code).toBe("ROOTFS_UNSAFE_PATH");
    await expectOutsideUntouched();
  });

  it("a directory full of files, replaced by an escaping symlink, cannot be written through", async () => {
    const code = await codeOf(
      extract([
        { name: "a/", type: "directory" },
        ...filler("a"),
        { name: "a", type: "symlink", linkname: "../outside" },
        { name: "a/new", content: "pwned" },
      ]),
    );
    expect(code).toBe("ROOTFS_UNSAFE_PATH");
    await expectOutsideUntouched();
  });

  it("a file replaced by an escaping symlink and then a file again never writes outside", async () => {
    await extract([
      ...filler("d"),
      { name: "x", content: "first" },
      { name: "x", type: "symlink", linkname: "../outside/canary" },
      { name: "x", content: "second" },
    ]);
    expect((await lstat(join(root, "x"))).isFile()).toBe(true);
    expect(await readFile(join(root, "x"), "utf8")).toBe("second");
    await expectOutsideUntouched();
  });

  it("a lower layer's symlink at a file's path is replaced, never followed", async () => {
    await extract([{ name: "f", type: "symlink", linkname: "../outside/canary" }]);
    await extract([...filler("d"), { name: "f", content: "new" }]);
    expect((await lstat(join(root, "f"))).isFile()).toBe(true);
    expect(await readFile(join(root, "f"), "utf8")).toBe("new");
    await expectOutsideUntouched();
  });

  it("a hardlink to a symlink made just before links the symlink, not what it points to", async () => {
    await extract([...filler("d"), { name: "s", type: "symlink", linkname: "../outside/canary" }, { name: "l", type: "link", linkname: "s" }]);
    expect((await lstat(join(root, "l"))).isSymbolicLink()).toBe(true);
    expect((await lstat(join(root, "l"))).ino).toBe((await lstat(join(root, "s"))).ino);
    await expectOutsideUntouched();
  });
});

describe("extractLayer into a fresh root: entries that depend on each other", () => {
  it("a later entry for the same path wins, content and metadata", async () => {
    const t1 = new Date("2020-01-01T00:00:00Z");
    const t2 = new Date("2021-02-03T04:05:06Z");
    await extract([
      ...filler("d"),
      { name: "same", content: "one", mode: 0o644, mtime: t1 },
      { name: "same", content: "two-longer", mode: 0o600, mtime: t2 },
      { name: "big", content: "a".repeat(100_000), mode: 0o755 },
      ...filler("e", 10),
      { name: "big", content: "b".repeat(70_000), mode: 0o640 },
      { name: "s", type: "symlink", linkname: "one" },
      { name: "s", type: "symlink", linkname: "two" },
    ]);
    const st = await lstat(join(root, "same"));
    expect(await readFile(join(root, "same"), "utf8")).toBe("two-longer");
    expect(st.mode & 0o7777).toBe(0o600);
    expect(st.mtime.getTime()).toBe(t2.getTime());
    expect(await readFile(join(root, "big"), "utf8")).toBe("b".repeat(70_000));
    expect((await lstat(join(root, "big"))).mode & 0o7777).toBe(0o640);
    expect(await readlink(join(root, "s"))).toBe("two");
  });

  it.each([false, true])("a directory listed twice takes its last entry's mode and mtime (onto existing content: %s)", async (existing) => {
    const t1 = new Date("2020-01-01T00:00:00Z");
    const t2 = new Date("2021-02-03T04:05:06Z");
    if (existing) await mkdir(join(root, "dd"), { mode: 0o700 });
    await extract([
      { name: "dd/", type: "directory", mode: 0o700, mtime: t1 },
      ...filler("dd", 5),
      { name: "dd/", type: "directory", mode: 0o751, mtime: t2 },
    ]);
    const st = await lstat(join(root, "dd"));
    expect(st.mode & 0o7777).toBe(0o751);
    expect(st.mtime.getTime()).toBe(t2.getTime());
  });

  const kinds: Record<string, TarSpec> = {
    file: { name: "p", content: "the file", mode: 0o640 },
    symlink: { name: "p", type: "symlink", linkname: "the-target" },
    hardlink: { name: "p", type: "link", linkname: "d/fill3" },
    directory: { name: "p/", type: "directory", mode: 0o711 },
  };
  const pairs = Object.keys(kinds).flatMap((a) => Object.keys(kinds).map((b) => [a, b] as const));
  it.each(pairs)("a %s then a %s at the same path: the second one is what stays", async (first, second) => {
    await extract([...filler("d"), kinds[first]!, kinds[second]!]);
    const st = await lstat(join(root, "p"));
    if (second === "file") expect([st.isFile(), st.nlink, await readFile(join(root, "p"), "utf8")]).toEqual([true, 1, "the file"]);
    if (second === "symlink") expect(await readlink(join(root, "p"))).toBe("the-target");
    if (second === "hardlink") expect(st.ino).toBe((await lstat(join(root, "d/fill3"))).ino);
    if (second === "directory") expect([st.isDirectory(), await readdir(join(root, "p"))]).toEqual([true, []]);
    if (second !== "hardlink") expect((await lstat(join(root, "d/fill3"))).nlink).toBe(1);
  });

  it.each([false, true])("a hardlink to a file written just before shares its inode and content (gzip=%s)", async (gzip) => {
    const big = "z".repeat(300_000);
    await extract(
      [
        ...filler("d"),
        { name: "small", content: "tiny", mode: 0o4755 },
        { name: "small-link", type: "link", linkname: "small" },
        { name: "large", content: big },
        { name: "large-link", type: "link", linkname: "large" },
      ],
      { gzip },
    );
    for (const [f, l, c] of [["small", "small-link", "tiny"], ["large", "large-link", big]] as const) {
      const a = await lstat(join(root, f));
      const b = await lstat(join(root, l));
      expect(b.ino).toBe(a.ino);
      expect(a.nlink).toBe(2);
      expect(await readFile(join(root, l), "utf8")).toBe(c);
    }
    expect((await lstat(join(root, "small"))).mode & 0o7777).toBe(0o4755);
  });

  it("a file then a directory of the same name, and a directory then a file", async () => {
    await extract([
      ...filler("d"),
      { name: "x", content: "file first" },
      { name: "x/", type: "directory", mode: 0o750 },
      { name: "x/inner", content: "in x" },
      { name: "y/", type: "directory" },
      ...filler("y"),
      { name: "y", content: "file last" },
    ]);
    expect((await stat(join(root, "x"))).mode & 0o7777).toBe(0o750);
    expect(await readFile(join(root, "x/inner"), "utf8")).toBe("in x");
    expect(await readFile(join(root, "y"), "utf8")).toBe("file last");
  });

  it("after a replacement, directories and files made before it are still seen", async () => {
    await extract([
      { name: "d/", type: "directory", mode: 0o751 },
      ...filler("d"),
      { name: "y", content: "1" },
      { name: "y", content: "2" },
      { name: "d/", type: "directory", mode: 0o751 },
      { name: "d/fill0", content: "again" },
    ]);
    expect((await stat(join(root, "d"))).mode & 0o7777).toBe(0o751);
    expect(await readFile(join(root, "d/fill0"), "utf8")).toBe("again");
    expect(await readFile(join(root, "y"), "utf8")).toBe("2");
  });

  it("a file just made is not a directory for a later child", async () => {
    expect(await codeOf(extract([...filler("d"), { name: "a", content: "file" }, { name: "a/b", content: "x" }]))).toBe("ROOTFS_NOT_A_DIRECTORY");
  });

  it("writes through an in-root symlink made just before land at its target", async () => {
    await extract([
      { name: "real/", type: "directory" },
      ...filler("real"),
      { name: "link", type: "symlink", linkname: "real" },
      { name: "link/via", content: "through" },
      { name: "abs", type: "symlink", linkname: "/real" },
      { name: "abs/via-abs", content: "through abs" },
    ]);
    expect(await readFile(join(root, "real/via"), "utf8")).toBe("through");
    expect(await readFile(join(root, "real/via-abs"), "utf8")).toBe("through abs");
  });

  it("a file made with its mode by open(2) still gets exactly the layer's mode, whatever the umask takes away", async () => {
    // The umask (022 in tests) would clear group/other write bits; special bits need their own chmod.
    const modes = [0o777, 0o666, 0o646, 0o644, 0o755, 0o400, 0o004, 0o4755, 0o2775, 0o1777];
    const uid = isRoot ? 1234 : process.getuid!();
    await extract([
      ...filler("d"),
      ...modes.map((mode, i) => ({ name: `m/own${i}`, content: `o${i}`, mode })),
      ...modes.map((mode, i) => ({ name: `m/other${i}`, content: `x${i}`, mode, uid, gid: uid })),
    ]);
    for (const [i, mode] of modes.entries()) {
      expect([i, (await lstat(join(root, `m/own${i}`))).mode & 0o7777]).toEqual([i, mode]);
      const st = await lstat(join(root, `m/other${i}`));
      expect([i, st.mode & 0o7777, st.uid]).toEqual([i, mode, uid]);
      expect(await readFile(join(root, `m/other${i}`), "utf8")).toBe(`x${i}`);
    }
  });

  it("many files of every size, across chunk boundaries, keep content, mode and mtime", async () => {
    const sizes = [0, 1, 511, 512, 513, 4096, 32 * 1024, 32 * 1024 + 1, 200_000, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3_000_000];
    const specs: TarSpec[] = sizes.map((n, i) => ({
      name: `sizes/f${i}`,
      content: String.fromCharCode(97 + (i % 26)).repeat(n),
      mode: 0o600 + i,
      mtime: new Date(Date.UTC(2001, 0, 1 + i)),
    }));
    for (const gzip of [false, true]) {
      await rm(root, { recursive: true, force: true });
      await mkdir(root);
      await extract([...filler("d"), ...specs], { gzip });
      for (const [i, n] of sizes.entries()) {
        const p = join(root, `sizes/f${i}`);
        const st = await lstat(p);
        expect(st.size).toBe(n);
        expect(st.mode & 0o7777).toBe(0o600 + i);
        expect(st.mtime.getTime()).toBe(Date.UTC(2001, 0, 1 + i));
        const body = await readFile(p);
        expect(body.every((b) => b === 97 + (i % 26))).toBe(true);
      }
    }
  });

  it("applies whiteouts to files a lower layer made", async () => {
    await extract([...filler("d"), { name: "gone", content: "x" }, { name: "dir/old", content: "o" }]);
    await extract([...filler("e"), { name: ".wh.gone" }, { name: "dir/.wh..wh..opq" }, { name: "dir/new", content: "n" }, ...filler("f")]);
    expect((await readdir(root)).sort()).toEqual(["d", "dir", "e", "f"]);
    expect(await readdir(join(root, "dir"))).toEqual(["new"]);
  });
});

describe("extractLayer into a fresh root: failures", () => {
  it("a creation that fails fails the extraction with the errno, and nothing is written after it settles", async () => {
    const specs: TarSpec[] = [...filler("d"), { name: `d/${"n".repeat(300)}`, content: "name too long" }, ...filler("e", 200)];
    const err = await extract(specs).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OcibuildError);
    expect((err as OcibuildError).code).toBe("ROOTFS_EXTRACT_FAILED");
    expect((err as OcibuildError).details).toMatchObject({ errno: "ENAMETOOLONG" });
    const count = async () => (await readdir(root, { recursive: true })).length;
    const settled = await count();
    await new Promise((r) => setTimeout(r, 50));
    expect(await count()).toBe(settled);
  });

  it("an abort midway is ROOTFS_ABORTED, and nothing is written after it settles", async () => {
    const ac = new AbortController();
    const big = await makeTar(filler("d", 400));
    let sent = 0;
    const src = new Readable({
      read() {
        if (sent >= big.length) return void this.push(null);
        const chunk = big.subarray(sent, sent + 8192);
        sent += chunk.length;
        if (sent > big.length / 2) ac.abort();
        this.push(chunk);
      },
    });
    await expect(extractLayer(root, src, { signal: ac.signal })).rejects.toMatchObject({ code: "ROOTFS_ABORTED" });
    const settled = (await readdir(join(root, "d"))).length;
    expect(settled).toBeGreaterThan(0);
    expect(settled).toBeLessThan(400);
    await new Promise((r) => setTimeout(r, 50));
    expect((await readdir(join(root, "d"))).length).toBe(settled);
  });
});

describe.skipIf(!isRoot)("extractLayer owners (needs root)", () => {
  it("files and symlinks get the owner the layer names, whether or not it is the extracting user", async () => {
    await extract([
      ...filler("d"),
      { name: "mine", content: "0:0" },
      { name: "theirs", content: "5:6", uid: 5, gid: 6 },
      { name: "half", content: "0:7", gid: 7 },
      { name: "big-theirs", content: "q".repeat(100_000), uid: 8, gid: 9 },
      { name: "link-theirs", type: "symlink", linkname: "mine", uid: 10, gid: 11 },
      { name: "link-mine", type: "symlink", linkname: "theirs" },
    ]);
    const owner = async (p: string) => {
      const st = await lstat(join(root, p));
      return [st.uid, st.gid];
    };
    expect(await owner("mine")).toEqual([0, 0]);
    expect(await owner("theirs")).toEqual([5, 6]);
    expect(await owner("half")).toEqual([0, 7]);
    expect(await owner("big-theirs")).toEqual([8, 9]);
    expect(await owner("link-theirs")).toEqual([10, 11]);
    expect(await owner("link-mine")).toEqual([0, 0]);
    expect(await owner("d/fill0")).toEqual([0, 0]);
  });

  it("under a setgid root, files owned by root:root still end up root:root", async () => {
    await chown(root, 0, 4242);
    await chmod(root, 0o2775);
    await extract([{ name: "f", content: "x" }, { name: "sub/g", content: "y" }, { name: "s", type: "symlink", linkname: "f" }]);
    for (const p of ["f", "sub/g", "s"]) {
      const st = await lstat(join(root, p));
      expect([p, st.uid, st.gid]).toEqual([p, 0, 0]);
    }
  });

  it("on top of existing content, a file under a lower setgid directory still gets the layer's group", async () => {
    await mkdir(join(root, "mail"));
    await chown(join(root, "mail"), 0, 4242);
    await chmod(join(root, "mail"), 0o2775);
    await symlink("mail", join(root, "unrelated"));
    await extract([...filler("d"), { name: "mail/box", content: "x" }]);
    const st = await lstat(join(root, "mail/box"));
    expect([st.uid, st.gid]).toEqual([0, 0]);
  });
});
