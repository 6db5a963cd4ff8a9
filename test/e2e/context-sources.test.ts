/**
 * Build contexts that are not directories, end to end: a tar (gzip) context and a
 * Dockerfile alone piped to the bundled CLI's stdin (`ocibuild build -`), kaniko's
 * `--context tar://` with a relative -f inside the archive, a git URL context served by
 * a loopback git daemon (its URL and commit on the result, its repository cached in
 * the cache directory's git/), and the temp directory of each removed when the build
 * ends: after success, a failure, and an abort.
 */
import { execFileSync, spawn } from "node:child_process";
import { createReadStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { startGitDaemon, type GitDaemon } from "../helpers/git-daemon.js";
import { cli, have } from "../helpers/tools.js";

const root = resolve(import.meta.dirname, "../..");
const bundle = join(root, "dist/ocibuild.cjs");
const ready = have("git") && existsSync(bundle);

let work: string;
let temp: string;
let savedTmp: string | undefined;
let gitd: GitDaemon;
const p = (...names: string[]) => join(work, ...names);

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-ctxsources-"));
  // What the build unpacks goes under TMPDIR: a private one shows whether it is left behind.
  temp = p("tmp");
  await mkdir(temp);
  savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = temp;
  const files: Record<string, string> = { Dockerfile: "FROM scratch\nCOPY app /app\nLABEL from=archive\n", "app/main.txt": "hello\n", "docker/Dockerfile.alt": "FROM scratch\nCOPY app/main.txt /alt.txt\n" };
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(p("src", name)), { recursive: true });
    await writeFile(p("src", name), text);
  }
  execFileSync("tar", ["-czf", p("ctx.tar.gz"), "-C", p("src"), "."]);
  if (have("git")) gitd = await startGitDaemon();
});
afterAll(async () => {
  process.env.TMPDIR = savedTmp;
  await gitd?.stop();
  await rm(work, { recursive: true, force: true });
});
afterEach(async () => {
  // Whatever the build did, nothing it unpacked stays.
  expect((await readdir(temp)).filter((n) => n.startsWith("ocibuild-context-"))).toEqual([]);
});

/** The config (labels) and the paths of every layer of the image tagged v1 in the layout `dir`. */
async function image(dir: string): Promise<{ labels: Record<string, string>; paths: string[][] }> {
  const blob = async (d: string) => JSON.parse(await readFile(join(dir, "blobs", d.replace(":", "/")), "utf8"));
  const manifest = await blob(JSON.parse(await readFile(join(dir, "index.json"), "utf8")).manifests[0].digest);
  const list = (d: string) => execFileSync("tar", ["-tzf", join(dir, "blobs", d.replace(":", "/"))], { encoding: "utf8" }).split("\n").filter(Boolean).map((l) => l.replace(/\/$/, ""));
  return { labels: (await blob(manifest.config.digest)).config.Labels ?? {}, paths: manifest.layers.map((l: { digest: string }) => list(l.digest)) };
}

/** bin/ocibuild (the bundle) in a fresh process, `input` piped to its stdin. */
function runBin(args: string[], input: string | NodeJS.ReadableStream): Promise<{ code: number; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(root, "bin/ocibuild.cjs"), ...args], { cwd: work, env: { ...process.env, NO_COLOR: "1", TMPDIR: temp }, stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code: code ?? -1, stderr }));
    if (typeof input === "string") child.stdin.end(input);
    else input.pipe(child.stdin);
  });
}

describe.skipIf(!ready)("contexts from stdin, archives and git (needs git and the bundle: npm run build)", () => {
  it("ocibuild build - < context.tar.gz: the archive is the context, its Dockerfile inside", async () => {
    const r = await runBin(["build", "--no-push", "--cache-dir", p("cache"), "-o", `oci:${p("out-stdin")}:v1`, "-"], createReadStream(p("ctx.tar.gz")));
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(await image(p("out-stdin"))).toEqual({ labels: { from: "archive" }, paths: [["app", "app/main.txt"]] });
  });

  it("ocibuild build - < Dockerfile: a Dockerfile alone builds with an empty context", async () => {
    const ok = await runBin(["build", "--no-push", "--cache-dir", p("cache"), "-o", `oci:${p("out-bare")}:v1`, "-"], "FROM scratch\nLABEL bare=yes\n");
    expect(ok.stderr).not.toMatch(/error\[/);
    expect((await image(p("out-bare"))).labels).toEqual({ bare: "yes" });
    const copy = await runBin(["build", "--no-push", "--cache-dir", p("cache"), "-"], "FROM scratch\nCOPY app /app\n");
    expect(copy.code).toBe(1);
    expect(copy.stderr).toContain('COPY source "app" not found in the build context');
  });

  it("--context tar://ARCHIVE, with a relative -f inside the archive", async () => {
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-o", `oci:${p("out-tar")}:v1`, "--context", "tar://ctx.tar.gz", "-f", "docker/Dockerfile.alt"], { cwd: work });
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect((await image(p("out-tar"))).paths).toEqual([["alt.txt"]]);
  });

  it("a git URL context: the ref's subdirectory is built, the URL and commit are on the result, the repository cached in git/", async () => {
    const commit = gitd.repo("app", { Dockerfile: "FROM scratch\nCOPY . /\n", "svc/Dockerfile": "FROM scratch\nCOPY . /svc/\n", "svc/a.txt": "A\n" }, { tag: "v1" });
    const r = await build({ context: `${gitd.url}/app.git#v1:svc`, cacheDir: p("cache"), push: false, outputs: [{ type: "oci", dest: p("out-git"), tag: "v1" }] });
    expect(r.contextSource).toEqual({ uri: `${gitd.url}/app.git#v1`, digest: { sha1: commit } });
    expect((await image(p("out-git"))).paths).toEqual([["svc", "svc/Dockerfile", "svc/a.txt"]]);
    expect((await readdir(p("cache", "git"))).length).toBe(1);
    // The CLI: the positional URL, kaniko's --git branch= naming the ref.
    const viaCli = await cli(["--no-push", "--cache-dir", p("cache"), "-o", `oci:${p("out-git-cli")}:v1`, "--git", "branch=main", `${gitd.url}/app.git`], { cwd: work });
    expect(viaCli.stderr).not.toMatch(/error\[/);
    expect((await image(p("out-git-cli"))).paths).toEqual([["Dockerfile", "svc", "svc/Dockerfile", "svc/a.txt"]]);
  });

  it("a failed build and an aborted one remove what they unpacked too", async () => {
    await writeFile(p("src", "Dockerfile"), "FROM scratch\nCOPY missing /\n");
    execFileSync("tar", ["-czf", p("bad.tar.gz"), "-C", p("src"), "."]);
    await expect(build({ context: `tar://${p("bad.tar.gz")}`, cacheDir: p("cache"), push: false })).rejects.toMatchObject({ code: "BUILD_COPY_SOURCE_NOT_FOUND" });
    const ac = new AbortController();
    const aborted = build({ context: `tar://${p("ctx.tar.gz")}`, cacheDir: p("cache"), push: false, signal: ac.signal, onEvent: (e) => e.type === "step-start" && ac.abort() });
    await expect(aborted).rejects.toMatchObject({ name: "AbortError" });
  });
});
