/**
 * Where the Dockerfile and the context are: kaniko's `--context dir://DIR
 * --dockerfile Dockerfile` run from another directory (a relative --dockerfile
 * not found from the working directory is looked up in the context, as kaniko
 * does), and a context that does not exist (BUILD_CONTEXT_NOT_FOUND before anything
 * else). Builds FROM scratch with no RUN into an OCI layout.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "../helpers/tools.js";

let work: string;
const p = (...names: string[]) => join(work, ...names);
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-context-flags-"));
  await mkdir(p("workspace", "docker"), { recursive: true });
  await mkdir(p("elsewhere"));
  await writeFile(p("workspace", "Dockerfile"), "FROM scratch\nCOPY hello.txt /\nLABEL from=context\n");
  await writeFile(p("workspace", "docker", "Dockerfile.prod"), "FROM scratch\nLABEL from=context-sub\n");
  await writeFile(p("workspace", "hello.txt"), "hello\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Builds into a fresh layout and returns the image's labels. */
async function labels(args: string[], cwd: string, name: string) {
  const r = await cli(["--no-push", "--cache-dir", p("cache"), "-o", `oci:${p(name)}`, ...args], { cwd });
  expect(r.stderr).not.toMatch(/error\[/);
  expect(r.code).toBe(0);
  const blob = async (d: string) => JSON.parse(await readFile(p(name, "blobs", "sha256", d.slice(7)), "utf8"));
  const index = JSON.parse(await readFile(p(name, "index.json"), "utf8"));
  return (await blob((await blob(index.manifests[0].digest)).config.digest)).config.Labels;
}

describe("a relative --dockerfile is found as kaniko finds it", () => {
  it("kaniko's standard call from another directory: --context dir:///workspace --dockerfile Dockerfile", async () => {
    expect(await labels(["--context", `dir://${p("workspace")}`, "--dockerfile", "Dockerfile"], p("elsewhere"), "k1")).toEqual({ from: "context" });
  });

  it("a path under the context (-f docker/Dockerfile.prod), from another directory", async () => {
    expect(await labels(["-f", "docker/Dockerfile.prod", p("workspace")], p("elsewhere"), "k2")).toEqual({ from: "context-sub" });
  });

  it("a Dockerfile found from the working directory comes first, as with docker build", async () => {
    await writeFile(p("elsewhere", "Dockerfile"), "FROM scratch\nLABEL from=cwd\n");
    try {
      expect(await labels(["--context", `dir://${p("workspace")}`, "--dockerfile", "Dockerfile"], p("elsewhere"), "k3")).toEqual({ from: "cwd" });
    } finally {
      await rm(p("elsewhere", "Dockerfile"));
    }
  });

  it("found in neither place: BUILD_DOCKERFILE_NOT_FOUND names both", async () => {
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-f", "nope/Dockerfile", p("workspace")], { cwd: p("elsewhere") });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[BUILD_DOCKERFILE_NOT_FOUND\]: .*nope\/Dockerfile/);
    expect(r.stderr).toContain(p("elsewhere", "nope/Dockerfile"));
    expect(r.stderr).toContain(p("workspace", "nope/Dockerfile"));
  });
});

describe("a build context that does not exist is BUILD_CONTEXT_NOT_FOUND, before anything else", () => {
  it.each([
    ["with no COPY (once built with rc 0)", "FROM scratch\nLABEL a=b\n"],
    ["with a COPY (once blamed the COPY source)", "FROM scratch\nCOPY hello.txt /\n"],
  ])("%s", async (_what, dockerfile) => {
    const df = p(`Dockerfile-${dockerfile.length}`);
    await writeFile(df, dockerfile);
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-f", df, p("does", "not", "exist")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[BUILD_CONTEXT_NOT_FOUND\]: the build context .*does\/not\/exist does not exist \(ENOENT\)/);
  });

  it("a context that is a file says so (ENOTDIR)", async () => {
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-f", p("workspace", "Dockerfile"), p("workspace", "hello.txt")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[BUILD_CONTEXT_NOT_FOUND\]: the build context .*hello\.txt is not a directory/);
  });
});
