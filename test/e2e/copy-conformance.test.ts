/**
 * COPY/ADD/WORKDIR results that must be BuildKit's: the mode and owner of destination
 * directories, the root entry of an ADDed archive, wildcards that match nothing, and
 * owners named "root" or by a uid with no passwd entry. End to end on the busybox
 * base (or scratch) in a real registry, unpacked with umoci.
 */
import { execFile } from "node:child_process";
import { chmod, lstat, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci") && have("tar");

describe.skipIf(!ready)("COPY/ADD/WORKDIR conformance with BuildKit (needs root, bwrap, docker-registry, umoci, tar)", () => {
  const fx = useBusyboxRegistry("e2e-copyconf");
  let work: string;
  let base: string;

  beforeAll(() => {
    ({ work, base } = fx);
  });

  /** A context directory of mode 0700, as `mktemp -d` makes, holding the Dockerfile and `files`. */
  async function context(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
    const ctx = join(work, name);
    await mkdir(ctx, { recursive: true });
    await chmod(ctx, 0o700);
    await writeFile(join(ctx, "Dockerfile"), dockerfile);
    for (const [p, c] of Object.entries(files)) {
      await mkdir(join(ctx, p, ".."), { recursive: true });
      await writeFile(join(ctx, p), c);
    }
    return ctx;
  }

  async function buildCtx(ctx: string, name: string): Promise<void> {
    await build({ context: ctx, buildArgs: { BASE: base }, cacheDir: join(work, "cache"), outputs: [{ type: "oci", dest: join(work, `${name}-img`), tag: "v1" }] });
  }

  async function buildAndUnpack(ctx: string, name: string): Promise<string> {
    await buildCtx(ctx, name);
    await run("umoci", ["unpack", "--image", `${join(work, `${name}-img`)}:v1`, join(work, `${name}-bundle`)]);
    return join(work, `${name}-bundle`, "rootfs");
  }

  async function meta(path: string): Promise<[number, number, string]> {
    const st = await lstat(path);
    return [st.uid, st.gid, (st.mode & 0o7777).toString(8)];
  }

  it("COPY of a directory leaves the destination directory 0755 (or as it was); entries below keep their modes (also --from, --link)", async () => {
    const ctx = await context(
      "dirmode",
      "ARG BASE\nFROM ${BASE} AS src\nRUN mkdir -m 700 /src && mkdir -m 750 /src/in && echo x > /src/in/x\n" +
        "FROM ${BASE}\nWORKDIR /app\nCOPY . .\nCOPY sub /d\nRUN mkdir -m 700 /e /c2\nCOPY sub /e\nCOPY --chmod=777 sub /c2\n" +
        "COPY --chmod=o+r sub /sym\nCOPY --chown=1000:1000 sub /o/p\nCOPY --from=src /src /fd\nRUN mkdir -m 711 /fe\nCOPY --from=src /src /fe\n" +
        "COPY --link sub /l\n",
      { "sub/f": "f\n", "sub/inner/g": "g\n" },
    );
    await chmod(join(ctx, "sub"), 0o770);
    await chmod(join(ctx, "sub/inner"), 0o750);
    await chmod(join(ctx, "sub/f"), 0o640);
    const root = await buildAndUnpack(ctx, "dirmode");
    expect(await meta(join(root, "app"))).toEqual([0, 0, "755"]);
    expect(await readFile(join(root, "app/sub/f"), "utf8")).toBe("f\n");
    expect(await meta(join(root, "app/sub"))).toEqual([0, 0, "770"]);
    expect(await meta(join(root, "d"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "d/inner"))).toEqual([0, 0, "750"]);
    expect(await meta(join(root, "d/f"))).toEqual([0, 0, "640"]);
    expect(await meta(join(root, "e"))).toEqual([0, 0, "700"]);
    expect(await meta(join(root, "e/inner"))).toEqual([0, 0, "750"]);
    expect(await meta(join(root, "c2"))).toEqual([0, 0, "700"]);
    expect(await meta(join(root, "c2/inner"))).toEqual([0, 0, "777"]);
    expect(await meta(join(root, "c2/f"))).toEqual([0, 0, "777"]);
    expect(await meta(join(root, "sym"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "sym/inner"))).toEqual([0, 0, "754"]);
    expect(await meta(join(root, "sym/f"))).toEqual([0, 0, "644"]);
    expect(await meta(join(root, "o"))).toEqual([1000, 1000, "755"]);
    expect(await meta(join(root, "o/p"))).toEqual([1000, 1000, "755"]);
    expect(await meta(join(root, "o/p/inner"))).toEqual([1000, 1000, "750"]);
    expect(await meta(join(root, "fd"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "fd/in"))).toEqual([0, 0, "750"]);
    expect(await meta(join(root, "fe"))).toEqual([0, 0, "711"]);
    expect(await meta(join(root, "fe/in"))).toEqual([0, 0, "750"]);
    expect(await meta(join(root, "l"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "l/inner"))).toEqual([0, 0, "750"]);
  }, 120_000);

  it("an octal --chmod is the mode of the directories a copy makes on the way (BuildKit since v0.21); a symbolic one and an archive's leave 0755", async () => {
    const ctx = await context(
      "newdirmode",
      "ARG BASE\nFROM ${BASE}\nCOPY --chmod=777 sub /c\nCOPY --chmod=640 sub/f /deep/er/\nCOPY --chmod=700 <<EOF /hd/x\nhi\nEOF\n" +
        "COPY --chmod=o+r sub/f /symnew/f\nADD --chmod=700 t.tar /arch/\nRUN mkdir -m 700 /ex\nCOPY --chown=1000:1000 --chmod=750 sub/f /ex/new/\n",
      { "sub/f": "f\n", "sub/inner/g": "g\n" },
    );
    await pexec("tar", ["-cf", join(ctx, "t.tar"), "-C", join(ctx, "sub"), "f"]);
    const root = await buildAndUnpack(ctx, "newdirmode");
    expect(await meta(join(root, "c"))).toEqual([0, 0, "777"]);
    expect(await meta(join(root, "c/inner"))).toEqual([0, 0, "777"]);
    expect(await meta(join(root, "deep"))).toEqual([0, 0, "640"]);
    expect(await meta(join(root, "deep/er"))).toEqual([0, 0, "640"]);
    expect(await meta(join(root, "hd"))).toEqual([0, 0, "700"]);
    expect(await meta(join(root, "hd/x"))).toEqual([0, 0, "700"]);
    expect(await meta(join(root, "symnew"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "arch"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "ex"))).toEqual([0, 0, "700"]);
    expect(await meta(join(root, "ex/new"))).toEqual([1000, 1000, "750"]);
  }, 120_000);

  it("the cache key of a directory COPY leaves out the source directory's own mode, not the modes below it", async () => {
    const ctx = await context("dirkey", "FROM scratch\nCOPY . /app\n", { "sub/f": "f\n" });
    const opts = { context: ctx, cacheDir: join(work, "cache-dirkey"), outputs: [{ type: "oci" as const, dest: join(work, "dirkey-img"), tag: "v1" }] };
    expect((await build(opts)).steps.map((s) => s.cached)).toEqual([false]);
    await chmod(ctx, 0o775);
    expect((await build(opts)).steps.map((s) => s.cached)).toEqual([true]);
    await chmod(join(ctx, "sub"), 0o700);
    const third = await build(opts);
    expect(third.steps.map((s) => s.cached)).toEqual([false]);
    expect(third.steps[0]!.reason).toContain("sub changed");
  }, 120_000);

  it("ADD of a local tar skips the archive's root entry: the destination is 0755 0:0 or left as it was", async () => {
    const src = join(work, "tar-src");
    await mkdir(join(src, "sub"), { recursive: true });
    await writeFile(join(src, "file"), "in the archive\n");
    await chmod(join(src, "file"), 0o644);
    await chmod(join(src, "sub"), 0o750);
    await chmod(src, 0o700);
    const ctx = await context(
      "addroot",
      "ARG BASE\nFROM ${BASE}\nADD root.tar /d8\nRUN mkdir -m 711 /d9 && chown 42:43 /d9\nADD root.tar /d9\n",
    );
    await pexec("tar", ["--owner=1234", "--group=5678", "--numeric-owner", "-cf", join(ctx, "root.tar"), "-C", src, "."]);
    const root = await buildAndUnpack(ctx, "addroot");
    expect(await meta(join(root, "d8"))).toEqual([0, 0, "755"]);
    expect(await meta(join(root, "d8/file"))).toEqual([1234, 5678, "644"]);
    expect(await meta(join(root, "d8/sub"))).toEqual([1234, 5678, "750"]);
    expect(await meta(join(root, "d9"))).toEqual([42, 43, "711"]);
    expect(await meta(join(root, "d9/file"))).toEqual([1234, 5678, "644"]);
  }, 120_000);

  it("ADD --chown owns everything extracted from a local archive (BuildKit since v0.23)", async () => {
    const src = join(work, "tar-chown-src");
    await mkdir(join(src, "sub"), { recursive: true });
    await writeFile(join(src, "sub/file"), "in the archive\n");
    await chmod(join(src, "sub"), 0o750);
    const ctx = await context("addchown", "ARG BASE\nFROM ${BASE}\nADD --chown=7:8 owned.tar /d10/\nADD owned.tar /d11/\n");
    await pexec("tar", ["--owner=1234", "--group=5678", "--numeric-owner", "-cf", join(ctx, "owned.tar"), "-C", src, "."]);
    const root = await buildAndUnpack(ctx, "addchown");
    expect(await meta(join(root, "d10"))).toEqual([7, 8, "755"]);
    expect(await meta(join(root, "d10/sub"))).toEqual([7, 8, "750"]);
    expect((await meta(join(root, "d10/sub/file"))).slice(0, 2)).toEqual([7, 8]);
    expect((await meta(join(root, "d11/sub/file"))).slice(0, 2)).toEqual([1234, 5678]);
  }, 120_000);

  it("a wildcard that matches nothing is dropped; the copy fails only when nothing matched at all", async () => {
    const ok = await context("nomatch", "FROM scratch\nCOPY nomatch* a /one\nCOPY nomatch* a /two/\nCOPY a nomatch* /three\nCOPY a* nomatch?/x /four\n", { a: "A\n" });
    const root = await buildAndUnpack(ok, "nomatch");
    expect(await readFile(join(root, "one"), "utf8")).toBe("A\n");
    expect(await readFile(join(root, "two/a"), "utf8")).toBe("A\n");
    expect(await readFile(join(root, "three"), "utf8")).toBe("A\n");
    expect(await readFile(join(root, "four"), "utf8")).toBe("A\n");
    const none = await context("nomatch-none", "FROM scratch\nCOPY nomatch* other* /x/\n", { a: "A\n" });
    await expect(buildCtx(none, "nomatch-none")).rejects.toMatchObject({ code: "BUILD_COPY_SOURCE_NOT_FOUND" });
    const two = await context("nomatch-two", "FROM scratch\nCOPY nomatch* a Dockerfile /two\n", { a: "A\n" });
    await expect(buildCtx(two, "nomatch-two")).rejects.toMatchObject({ code: "BUILD_COPY_DEST_NOT_DIR" });
    const missing = await context("nomatch-missing", "FROM scratch\nCOPY nomatch* missing /x/\n", { a: "A\n" });
    await expect(buildCtx(missing, "nomatch-missing")).rejects.toMatchObject({ code: "BUILD_COPY_SOURCE_NOT_FOUND", message: expect.stringContaining('"missing"') });
  }, 120_000);

  it("root is 0:0 without /etc/passwd, and a uid without a passwd entry owns a WORKDIR as uid:uid", async () => {
    const ctx = await context(
      "rootuser",
      "FROM scratch\nUSER root\nWORKDIR /w\nCOPY --chown=root:root a /a\nCOPY --chown=root a /a2\nUSER 9999\nWORKDIR /x\nUSER 9999:root\nWORKDIR /y\nUSER 0\n",
      { a: "A\n" },
    );
    const root = await buildAndUnpack(ctx, "rootuser");
    expect(await meta(join(root, "w"))).toEqual([0, 0, "755"]);
    expect((await meta(join(root, "a"))).slice(0, 2)).toEqual([0, 0]);
    expect((await meta(join(root, "a2"))).slice(0, 2)).toEqual([0, 0]);
    expect(await meta(join(root, "x"))).toEqual([9999, 9999, "755"]);
    expect(await meta(join(root, "y"))).toEqual([9999, 0, "755"]);
  }, 120_000);

  it("file owners follow BuildKit: a uid gives uid:uid, a name its passwd uid and gid", async () => {
    const ctx = await context(
      "owners",
      "ARG BASE\nFROM ${BASE}\nRUN echo 'svc:x:2000:50::/:/bin/sh' >> /etc/passwd\nUSER 2000\nWORKDIR /sv\nUSER svc\nWORKDIR /sv2\nUSER root\n" +
        "COPY --chown=svc a /sv3\nCOPY --chown=2000 a /sv4\nCOPY --chown=svc:root a /sv5\nCOPY --link --chown=svc a /sv6\n",
      { a: "A\n" },
    );
    const root = await buildAndUnpack(ctx, "owners");
    expect((await meta(join(root, "sv"))).slice(0, 2)).toEqual([2000, 2000]);
    expect((await meta(join(root, "sv2"))).slice(0, 2)).toEqual([2000, 50]);
    expect((await meta(join(root, "sv3"))).slice(0, 2)).toEqual([2000, 50]);
    expect((await meta(join(root, "sv4"))).slice(0, 2)).toEqual([2000, 2000]);
    expect((await meta(join(root, "sv5"))).slice(0, 2)).toEqual([2000, 0]);
    expect((await meta(join(root, "sv6"))).slice(0, 2)).toEqual([2000, 50]);
  }, 120_000);

  it("RUN as root:root or 1000:root needs no /etc/passwd or /etc/group (BuildKit's fast path for two ids)", async () => {
    const ctx = await context(
      "runroot",
      "ARG BASE\nFROM ${BASE} AS bb\nFROM scratch\nCOPY --from=bb /bin/busybox /bin/busybox\nUSER root:root\n" +
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox id -u > /ids && /bin/busybox id -g >> /ids"]\nUSER 1000:root\nWORKDIR /u\n' +
        'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox id -u > /u/ids && /bin/busybox id -g >> /u/ids"]\nUSER 0\n',
    );
    const root = await buildAndUnpack(ctx, "runroot");
    expect(await readFile(join(root, "ids"), "utf8")).toBe("0\n0\n");
    expect(await readFile(join(root, "u/ids"), "utf8")).toBe("1000\n0\n");
  }, 120_000);

  it("directories a build makes are 0755 whatever the process umask", async () => {
    const ctx = await context("umask", "FROM scratch\nWORKDIR /w/x\nCOPY a /c/d/\nADD t.tar /e/f/\n", { a: "A\n", "t/in/g": "G\n" });
    await chmod(join(ctx, "t/in"), 0o755);
    await pexec("tar", ["-cf", join(ctx, "t.tar"), "-C", join(ctx, "t"), "in/g"]);
    const old = process.umask(0o077);
    let root: string;
    try {
      root = await buildAndUnpack(ctx, "umask");
    } finally {
      process.umask(old);
    }
    for (const d of ["w", "w/x", "c", "c/d", "e", "e/f", "e/f/in"]) expect([d, ...(await meta(join(root, d)))]).toEqual([d, 0, 0, "755"]);
  }, 120_000);

  it("an ignored directory holding re-included files is copied with its own mode and the --chown owner", async () => {
    const ctx = await context("reinclude", "FROM scratch\nCOPY --chown=1000:1000 . /app\n", {
      ".dockerignore": "ig\n!ig/keep\n!ig/sub/keep2\n",
      "ig/keep": "k\n",
      "ig/drop": "d\n",
      "ig/sub/keep2": "k2\n",
    });
    await chmod(join(ctx, "ig"), 0o750);
    await chmod(join(ctx, "ig/sub"), 0o700);
    const root = await buildAndUnpack(ctx, "reinclude");
    expect(await meta(join(root, "app/ig"))).toEqual([1000, 1000, "750"]);
    expect(await meta(join(root, "app/ig/sub"))).toEqual([1000, 1000, "700"]);
    expect((await meta(join(root, "app/ig/keep"))).slice(0, 2)).toEqual([1000, 1000]);
    expect(await readFile(join(root, "app/ig/sub/keep2"), "utf8")).toBe("k2\n");
    await expect(lstat(join(root, "app/ig/drop"))).rejects.toThrow();
    // The ignored directory's mode is part of the step's cache key, as it reaches the image.
    const opts = { context: ctx, cacheDir: join(work, "cache"), outputs: [{ type: "oci" as const, dest: join(work, "reinclude-img2"), tag: "v1" }] };
    expect((await build(opts)).steps.map((s) => s.cached)).toEqual([true]);
    await chmod(join(ctx, "ig/sub"), 0o750);
    const again = await build(opts);
    expect(again.steps.map((s) => s.cached)).toEqual([false]);
    expect(again.steps[0]!.reason).toContain("ig/sub changed");
  }, 120_000);
});
