/**
 * Build contexts that are not directories: tar archives from a file or stdin (plain
 * and gzip), a bare Dockerfile on stdin, and a git repository served by a real
 * git daemon, with its ref and subdirectory.
 */
import { execFileSync } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, readdir, rm, stat, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { materializeContext, parseContextSpec } from "../../src/builder/context-source.js";
import { OcibuildError } from "../../src/errors.js";
import { startGitDaemon, type GitDaemon } from "../helpers/git-daemon.js";

let work: string;
let gitd: GitDaemon;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-ctxsrc-"));
  const src = join(work, "src");
  await mkdir(join(src, "app"), { recursive: true });
  await writeFile(join(src, "Dockerfile"), "FROM scratch\nCOPY app /app\n");
  await writeFile(join(src, "app", "main.txt"), "hello\n");
  execFileSync("tar", ["-cf", join(work, "ctx.tar"), "-C", src, "."]);
  execFileSync("tar", ["-czf", join(work, "ctx.tar.gz"), "-C", src, "."]);
  gitd = await startGitDaemon();
});

afterAll(async () => {
  await gitd?.stop();
  await rm(work, { recursive: true, force: true });
});

const opts = () => ({ gitCacheDir: join(work, "git-cache") });

async function listed(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

describe("build contexts from archives, stdin and git", () => {
  it("reads the spellings docker build and kaniko accept", () => {
    expect(parseContextSpec("-")).toEqual({ kind: "stdin" });
    expect(parseContextSpec("tar:///w/ctx.tar.gz")).toEqual({ kind: "tar", path: "/w/ctx.tar.gz" });
    expect(parseContextSpec("dir:///workspace")).toEqual({ kind: "dir", path: "/workspace" });
    expect(parseContextSpec("https://example.test/org/repo.git#v1:sub")).toMatchObject({ kind: "git", source: { url: "https://example.test/org/repo.git", ref: "v1", subdir: "sub" } });
    expect(parseContextSpec("./app")).toEqual({ kind: "dir", path: "./app" });
    expect(() => parseContextSpec("s3://bucket/ctx.tar.gz")).toThrow(expect.objectContaining({ code: "BUILD_CONTEXT_UNSUPPORTED" }));
  });

  it("extracts a tar:// archive, plain or gzip, with the Dockerfile inside, and removes it after", async () => {
    for (const name of ["ctx.tar", "ctx.tar.gz"]) {
      const ctx = await materializeContext(parseContextSpec(`tar://${join(work, name)}`), opts());
      expect(await listed(ctx.dir)).toEqual(["Dockerfile", "app", "app/main.txt"]);
      expect(await readFile(join(ctx.dir, "app", "main.txt"), "utf8")).toBe("hello\n");
      await ctx.dispose();
      expect(await stat(ctx.dir).catch(() => null)).toBeNull();
    }
  });

  it("takes a gzip tar from stdin, and a Dockerfile alone from stdin with an empty context", async () => {
    const fromTar = await materializeContext({ kind: "stdin" }, { ...opts(), stdin: createReadStream(join(work, "ctx.tar.gz"), { highWaterMark: 100 }) });
    expect(await listed(fromTar.dir)).toEqual(["Dockerfile", "app", "app/main.txt"]);
    expect(fromTar.dockerfileText).toBeUndefined();
    await fromTar.dispose();
    const fromText = await materializeContext({ kind: "stdin" }, { ...opts(), stdin: Readable.from([Buffer.from("FROM scratch\nLABEL a=b\n")]) });
    expect(fromText.dockerfileText).toBe("FROM scratch\nLABEL a=b\n");
    expect(await listed(fromText.dir)).toEqual([]);
    await fromText.dispose();
  });

  it("names a missing archive, and refuses an archive that escapes its root", async () => {
    const missing = materializeContext(parseContextSpec(`tar://${join(work, "nope.tar")}`), opts());
    await expect(missing).rejects.toMatchObject({ code: "BUILD_CONTEXT_NOT_FOUND", message: expect.stringContaining("nope.tar") });
    const evil = join(work, "evil");
    await mkdir(evil, { recursive: true });
    await writeFile(join(evil, "x"), "x");
    execFileSync("tar", ["-cf", join(work, "evil.tar"), "-C", evil, "--transform", "s,^x,../../escaped,", "x"]);
    const e = await materializeContext(parseContextSpec(`tar://${join(work, "evil.tar")}`), opts()).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(OcibuildError);
    expect(await stat(join(work, "escaped")).catch(() => null)).toBeNull();
  });

  it("checks out a git context at its ref and subdirectory, recording the URL and commit", async () => {
    const commit = gitd.repo("app", { "Dockerfile": "FROM scratch\n", "svc/Dockerfile": "FROM scratch\nCOPY . /\n", "svc/a.txt": "A\n" }, { tag: "v1" });
    const ctx = await materializeContext(parseContextSpec(`${gitd.url}/app.git#v1:svc`), opts());
    expect(await listed(ctx.dir)).toEqual(["Dockerfile", "a.txt"]);
    expect(ctx.uri).toBe(`${gitd.url}/app.git#v1`);
    expect(ctx.digest).toEqual({ sha1: commit });
    await ctx.dispose();
    const bad = materializeContext(parseContextSpec(`${gitd.url}/app.git#nope`), opts());
    await expect(bad).rejects.toMatchObject({ code: "BUILD_GIT_REF_NOT_FOUND", message: expect.stringContaining("context git://") });
  });
});
