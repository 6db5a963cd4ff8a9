import { execFileSync } from "node:child_process";
import { chmod, link, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isOcibuildError } from "../../src/errors.js";
import { type LayerEntry, tarChunks, writeLayer } from "../../src/oci/layer.js";
import { walkDirectory } from "../../src/oci/tar-entries.js";

const isRoot = process.getuid?.() === 0;

async function all(it: AsyncIterable<LayerEntry>): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
}

let root: string;
let tree: string;
let sockServer: ReturnType<typeof createServer> | undefined;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "ocibuild-walk-"));
  tree = join(root, "tree");
  await mkdir(join(tree, "a/b"), { recursive: true });
  await mkdir(join(tree, "a-b"));
  await mkdir(join(tree, "B"));
  await mkdir(join(tree, "skip/inner"), { recursive: true });
  await writeFile(join(tree, "a/b/file.txt"), "nested\n");
  await writeFile(join(tree, "a/z"), "z");
  await writeFile(join(tree, "a-b/x"), "x");
  await writeFile(join(tree, "B/upper"), "");
  await writeFile(join(tree, "skip/inner/f"), "skipped");
  await writeFile(join(tree, "é"), "accent");
  await writeFile(join(tree, "z-setuid"), "#!/bin/sh\n");
  await chmod(join(tree, "z-setuid"), 0o4750);
  await writeFile(join(tree, "first"), "shared content\n");
  await link(join(tree, "first"), join(tree, "second"));
  await link(join(tree, "first"), join(tree, "a/third"));
  await symlink("/etc/passwd", join(tree, "abs-link"));
  await symlink("../../outside", join(tree, "a/rel-link"));
  execFileSync("mkfifo", [join(tree, "fifo")]);
  // A socket: tar cannot hold it, so the walk skips it.
  sockServer = createServer();
  await new Promise<void>((res) => sockServer!.listen(join(tree, "sock"), res));
  await utimes(join(tree, "a/z"), new Date("2020-01-02T03:04:05Z"), new Date("2020-01-02T03:04:05Z"));
});

afterAll(async () => {
  await new Promise<void>((res) => (sockServer ? sockServer.close(() => res()) : res()));
  await rm(root, { recursive: true, force: true });
});

describe("walkDirectory", () => {
  it("visits exactly what find sees (minus the socket), parents first, names in byte order per directory", async () => {
    const entries = await all(walkDirectory(tree));
    const paths = entries.map((e) => e.path);
    const found = execFileSync("find", [".", "-mindepth", "1", "!", "-type", "s"], { cwd: tree, encoding: "utf8" })
      .trim()
      .split("\n")
      .map((p) => p.slice(2));
    expect([...paths].sort()).toEqual([...found].sort());
    for (const [i, p] of paths.entries()) {
      const parent = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : undefined;
      if (parent !== undefined) expect(paths.indexOf(parent), p).toBeLessThan(i);
    }
    // Siblings appear in UTF-8 byte order: "B" < "a" < "a-b" < "z-setuid" < "é".
    const top = paths.filter((p) => !p.includes("/"));
    const sortedTop = [...top].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(top).toEqual(sortedTop);
    expect(top.indexOf("a")).toBeLessThan(top.indexOf("a-b"));
    expect(top.at(-1)).toBe("é");
    // Depth first: a's children come before a-b.
    expect(paths.indexOf("a/z")).toBeLessThan(paths.indexOf("a-b"));
  });

  it("keeps modes, owners, mtimes, symlink targets (unfollowed), fifos, and turns repeated inodes into hardlinks", async () => {
    const entries = await all(walkDirectory(tree));
    const by = new Map(entries.map((e) => [e.path, e]));
    for (const e of entries) {
      const st = await lstat(join(tree, e.path));
      expect(e.mode, e.path).toBe(st.mode & 0o7777);
      expect([e.uid, e.gid], e.path).toEqual([st.uid, st.gid]);
      expect(e.mtime.getTime(), e.path).toBe(Math.floor(st.mtimeMs));
    }
    expect(by.get("z-setuid")!.mode).toBe(0o4750);
    expect(by.get("a/z")!.mtime.toISOString()).toBe("2020-01-02T03:04:05.000Z");
    expect(by.get("abs-link")).toMatchObject({ type: "symlink", linkname: "/etc/passwd" });
    expect(by.get("a/rel-link")).toMatchObject({ type: "symlink", linkname: "../../outside" });
    expect(by.get("fifo")!.type).toBe("fifo");
    // "a/third" is walked first (a < first < second), so the others link to it.
    expect(by.get("a/third")).toMatchObject({ type: "file", size: 15 });
    expect(by.get("first")).toMatchObject({ type: "hardlink", linkname: "a/third" });
    expect(by.get("second")).toMatchObject({ type: "hardlink", linkname: "a/third" });
    expect(by.has("sock")).toBe(false);
  });

  it("applies prefix and filter (a filtered directory is not descended)", async () => {
    const seen: string[] = [];
    const entries = await all(
      walkDirectory(tree, {
        prefix: "/app/",
        filter: (rel, isDir) => {
          seen.push(`${rel}${isDir ? "/" : ""}`);
          return rel !== "skip" && rel !== "fifo";
        },
      }),
    );
    const paths = entries.map((e) => e.path);
    expect(paths.every((p) => p.startsWith("app/"))).toBe(true);
    expect(paths).not.toContain("app/skip");
    expect(seen).toContain("skip/");
    expect(seen.some((s) => s.startsWith("skip/inner"))).toBe(false);
    expect(paths).not.toContain("app/fifo");
    expect(entries.find((e) => e.path === "app/first")).toMatchObject({ type: "hardlink", linkname: "app/a/third" });
  });

  it("fails clearly for a missing root, a file root and a '..' prefix", async () => {
    const codeOf = async (p: AsyncIterable<LayerEntry>) => all(p).then(() => "resolved", (e: unknown) => (isOcibuildError(e) ? e.code : String(e)));
    expect(await codeOf(walkDirectory(join(root, "nope")))).toBe("LAYER_WALK_NOT_FOUND");
    expect(await codeOf(walkDirectory(join(tree, "first")))).toBe("LAYER_WALK_NOT_DIRECTORY");
    expect(await codeOf(walkDirectory(tree, { prefix: "../x" }))).toBe("LAYER_ENTRY_INVALID");
  });

  it("follows a symlinked root (the caller's choice) but nothing below it", async () => {
    const alias = join(root, "alias");
    await symlink(tree, alias);
    const viaAlias = await all(walkDirectory(alias));
    const direct = await all(walkDirectory(tree));
    expect(viaAlias.map((e) => [e.path, e.type])).toEqual(direct.map((e) => [e.path, e.type]));
    expect(viaAlias.find((e) => e.path === "abs-link")?.type).toBe("symlink");
  });

  it("stops with ABORTED when the signal fires", async () => {
    const ac = new AbortController();
    const it = walkDirectory(tree, { signal: ac.signal })[Symbol.asyncIterator]();
    await it.next();
    ac.abort();
    await expect(it.next()).rejects.toMatchObject({ code: "ABORTED" });
  });

  it("gives the same layer digest for the same tree twice", async () => {
    const sink = () => new Writable({ write: (_c, _e, cb) => cb() });
    const a = await writeLayer(walkDirectory(tree), sink());
    const b = await writeLayer(walkDirectory(tree), sink());
    expect(b.digest).toBe(a.digest);
  });

  it.skipIf(!isRoot)("walk -> tar -> GNU tar extract reproduces the tree (needs root to keep owners and devices)", async () => {
    const dev = join(root, "devtree");
    await mkdir(dev);
    execFileSync("mknod", [join(dev, "null"), "c", "1", "3"]);
    execFileSync("mknod", [join(dev, "loop9"), "b", "7", "9"]);
    await writeFile(join(dev, "owned"), "o");
    execFileSync("chown", ["1234:5678", join(dev, "owned")]);
    const devEntries = await all(walkDirectory(dev));
    expect(devEntries.find((e) => e.path === "null")).toMatchObject({ type: "char", devmajor: 1, devminor: 3 });
    expect(devEntries.find((e) => e.path === "loop9")).toMatchObject({ type: "block", devmajor: 7, devminor: 9 });
    expect(devEntries.find((e) => e.path === "owned")).toMatchObject({ uid: 1234, gid: 5678 });

    for (const src of [tree, dev]) {
      const tarPath = join(root, "walk.tar");
      const parts: Buffer[] = [];
      for await (const c of tarChunks(walkDirectory(src))) parts.push(c);
      await writeFile(tarPath, Buffer.concat(parts));
      const out = await mkdtemp(join(root, "out-"));
      execFileSync("tar", ["--numeric-owner", "-xpf", tarPath, "-C", out]);
      for (const e of await all(walkDirectory(src))) {
        const a = await lstat(join(src, e.path));
        const b = await lstat(join(out, e.path));
        expect([b.mode, b.uid, b.gid, b.rdev], e.path).toEqual([a.mode, a.uid, a.gid, a.rdev]);
        if (!a.isSymbolicLink()) expect(Math.floor(b.mtimeMs / 1000), e.path).toBe(Math.floor(a.mtimeMs / 1000));
        if (a.isFile()) expect((await readFile(join(out, e.path))).equals(await readFile(join(src, e.path))), e.path).toBe(true);
        if (a.isSymbolicLink()) expect(await readlink(join(out, e.path))).toBe(await readlink(join(src, e.path)));
        if (e.type === "hardlink") expect(b.ino).toBe((await lstat(join(out, e.linkname!))).ino);
      }
    }
  });
});
