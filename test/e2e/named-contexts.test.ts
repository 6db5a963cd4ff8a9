/**
 * Named build contexts (--build-context NAME=VALUE / buildContexts) against real parts:
 * a docker-image:// context pinning a base by digest in a real registry (the tag moved
 * on since), a stage replaced by a context (its FROM never resolved), local directory
 * contexts read by COPY --from and RUN --mount from= with their own .dockerignore, a
 * miss reason naming the context, and an image from a local OCI layout.
 */
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { build, type BuildOptions, type BuildResult } from "../../src/builder/build.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { cli, have, isRoot } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap") && have("skopeo");

/** The layer digests of the image tagged `tag` in the OCI layout `dir`. */
async function layoutLayers(dir: string, tag: string): Promise<string[]> {
  const blob = async (d: string) => JSON.parse(await readFile(join(dir, "blobs", d.replace(":", "/")), "utf8"));
  const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
  const desc = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.["org.opencontainers.image.ref.name"] === tag);
  return (await blob(desc.digest)).layers.map((l: { digest: string }) => l.digest);
}

/** The paths in the layer `digest` of the OCI layout `dir`. */
function layerPaths(dir: string, digest: string): string[] {
  const out = execFileSync("tar", ["-tzf", join(dir, "blobs", digest.replace(":", "/"))], { encoding: "utf8" });
  return out.split("\n").filter((l) => l !== "").map((l) => l.replace(/^\.\//, "").replace(/\/$/, "")).sort();
}

describe.skipIf(!ready)("named build contexts (needs root, bwrap, docker-registry, skopeo)", () => {
  const f = useBusyboxRegistry("namedctx");

  async function files(dir: string, content: Record<string, string>): Promise<string> {
    const root = join(f.work, dir);
    for (const [p, c] of Object.entries(content)) {
      await mkdir(dirname(join(root, p)), { recursive: true });
      await writeFile(join(root, p), c);
    }
    return root;
  }

  const opts = (context: string, extra: Partial<BuildOptions>): BuildOptions => ({ context, cacheDir: f.cacheDir, push: false, ...extra });

  it("docker-image://REF@sha256: pins FROM NAME to that image, though its tag has moved on", async () => {
    const pinned = `${f.reg.host}/pin/base`;
    const first = await build(opts(await files("pin-v1", { Dockerfile: `FROM ${f.base}\nLABEL v=1\n` }), { tags: [`${pinned}:latest`], push: true }));
    // The tag moves to an image with one more layer.
    await build(opts(await files("pin-v2", { Dockerfile: `FROM ${f.base}\nCOPY extra /extra\n`, extra: "x\n" }), { tags: [`${pinned}:latest`], push: true }));
    const ctx = await files("pin-use", { Dockerfile: "FROM base\nRUN echo built > /marker\n" });
    const out = join(f.work, "pin-out");
    const r = await build(opts(ctx, { buildContexts: { base: `docker-image://${pinned}@${first.digest}` }, outputs: [{ type: "oci", dest: out, tag: "v1" }] }));
    const baseLayers = first.image.layers.map((l) => l.descriptor.digest);
    const built = await layoutLayers(out, "v1");
    expect(built.slice(0, baseLayers.length)).toEqual(baseLayers);
    expect(built).toHaveLength(baseLayers.length + 1);
    expect(r.image.config.parsed.config?.Labels).toEqual({ v: "1" });
  });

  it("a context replaces a stage of its name: the stage's own FROM is never resolved", async () => {
    const ctx = await files("replace", { Dockerfile: "FROM nosuch.invalid/never/pulled:1 AS base\nRUN exit 1\nFROM base\nLABEL ok=yes\n" });
    const r = await build(opts(ctx, { buildContexts: { base: `docker-image://${f.base}` } }));
    expect(r.image.config.parsed.config?.Labels?.ok).toBe("yes");
    expect(r.steps.map((s) => s.instruction)).toEqual(["LABEL ok=yes"]);
  });

  it("a local directory for COPY --from and RUN --mount from=, its own .dockerignore honoured; a change is named in the miss reason", async () => {
    const src = await files("src-ctx", { "main.go": "package main\n", "secret.txt": "no\n", ".dockerignore": "secret.txt\n" });
    // NAME.dockerignore comes before .dockerignore (which here would hide a.md).
    const docs = await files("docs-ctx", { "a.md": "a\n", "draft.md": "wip\n", "docs.dockerignore": "draft.md\n", ".dockerignore": "a.md\n" });
    const dockerfile = `FROM nosuch.invalid/never:1 AS src\nFROM ${f.base}\nCOPY --from=docs . /docs/\nCOPY --from=src . /src/\nRUN --mount=from=src,target=/s ls -a /s > /listing\n`;
    const ctx = await files("local-use", { Dockerfile: dockerfile });
    const out = join(f.work, "local-out");
    const buildIt = () => build(opts(ctx, { buildContexts: { src, docs }, outputs: [{ type: "oci", dest: out, tag: "v1" }] }));
    const first = await buildIt();
    const layers = await layoutLayers(out, "v1");
    const [copyDocs, copySrc, run] = layers.slice(-3).map((d) => layerPaths(out, d));
    expect(copySrc).toEqual(["src", "src/.dockerignore", "src/main.go"]);
    expect(copyDocs).toEqual(["docs", "docs/.dockerignore", "docs/a.md", "docs/docs.dockerignore"]);
    expect(run).toContain("listing");
    const listing = execFileSync("tar", ["-xzOf", join(out, "blobs", layers[layers.length - 1]!.replace(":", "/")), "listing"], { encoding: "utf8" });
    expect(listing.split("\n").filter((l) => l !== "" && l !== "." && l !== "..")).toEqual([".dockerignore", "main.go"]);
    expect(first.steps.filter((s) => s.base === undefined).every((s) => !s.cached)).toBe(true); // FROM steps report how the base resolved, not the cache

    await writeFile(join(src, "main.go"), "package main // v2\n");
    const second = await buildIt();
    const step = (r: BuildResult, text: string) => r.steps.find((s) => s.instruction.startsWith(text))!;
    expect(step(second, "COPY --from=src").reason).toBe("context 'src' file main.go changed");
    expect(step(second, "COPY --from=docs").cached).toBe(true);
    expect(step(second, "RUN").reason).toBe("mount /s: context 'src' file main.go changed");
    // An ignored file changing changes nothing.
    await writeFile(join(src, "secret.txt"), "still no\n");
    expect((await buildIt()).steps.every((s) => s.cached)).toBe(true);
  });

  it("a local directory context cannot be a FROM base: the error says what to use", async () => {
    const dir = await files("from-dir-ctx", { x: "x\n" });
    const ctx = await files("from-dir", { Dockerfile: "FROM dirctx\nLABEL a=b\n" });
    await expect(build(opts(ctx, { buildContexts: { dirctx: dir } }))).rejects.toMatchObject({ code: "BUILD_CONTEXT_UNSUPPORTED", message: expect.stringContaining("context 'dirctx' is a local directory") });
  });

  it("oci-layout://DIR:TAG and oci-layout://DIR@sha256: give an image of a local layout", async () => {
    const layout = join(f.work, "layout");
    const made = await build(opts(await files("layout-src", { Dockerfile: "FROM scratch\nCOPY hello /hello\n", hello: "hi\n" }), { outputs: [{ type: "oci", dest: layout, tag: "v1" }] }));
    const ctx = await files("layout-use", { Dockerfile: "FROM lay\nCOPY more /more\n", more: "more\n" });
    for (const value of [`oci-layout://${layout}:v1`, `oci-layout://${layout}@${made.digest}`]) {
      const out = join(f.work, `layout-out-${value.includes("@") ? "digest" : "tag"}`);
      await build(opts(ctx, { buildContexts: { lay: value }, outputs: [{ type: "oci", dest: out, tag: "v1" }] }));
      const layers = await layoutLayers(out, "v1");
      expect(layers[0]).toBe(made.image.layers[0]!.descriptor.digest);
      expect(layers.map((d) => layerPaths(out, d))).toEqual([["hello"], ["more"]]);
    }
  });

  it("the CLI takes --build-context NAME=VALUE and names a bad one", async () => {
    await files("cli-ctx", { "f.txt": "f\n" });
    const ctx = await files("cli-use", { Dockerfile: "FROM scratch\nCOPY --from=extra f.txt /\n" });
    const out = join(f.work, "cli-out");
    // A relative directory is the working directory's.
    const ok = await cli(["--no-push", "--cache-dir", f.cacheDir, "-o", `oci:${out}:v1`, "--build-context", "extra=../cli-ctx", "."], { cwd: ctx });
    expect(ok.stderr).not.toMatch(/error\[/);
    expect(ok.code).toBe(0);
    expect((await layoutLayers(out, "v1")).map((d) => layerPaths(out, d))).toEqual([["f.txt"]]);
    const bad = await cli(["--no-push", "--cache-dir", f.cacheDir, "--build-context", "extra=s3://bucket/x", ctx], { cwd: ctx });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("error[BUILD_CONTEXT_UNSUPPORTED]: --build-context extra=s3://bucket/x: context s3://bucket/x: not a directory");
    // A name no FROM or --from could reach is refused, not ignored.
    for (const name of ["Extra", "scratch"]) {
      const r = await cli(["--no-push", "--cache-dir", f.cacheDir, "--build-context", `${name}=.`, ctx], { cwd: ctx });
      expect(r.stderr).toMatch(new RegExp(`^error\\[BUILD_CONTEXT_UNSUPPORTED\\]: --build-context ${name}=\\S+: "${name}" is`));
    }
  });
});
