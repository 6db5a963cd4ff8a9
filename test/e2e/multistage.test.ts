/**
 * The builder end to end on a busybox base made by the test and pushed to a real
 * registry: multi-stage, RUN in bubblewrap, deleting a base file, COPY --from,
 * --chown/--chmod, USER by name, WORKDIR; unpacked by umoci and then run.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { startFaultProxy } from "../helpers/fault-proxy.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const CTX = resolve(__dirname, "../../testdata/multistage");
const ready = isRoot && haveRegistry() && have("bwrap") && have("skopeo") && have("umoci");

describe.skipIf(!ready)("multi-stage build with RUN on a busybox base (needs root, bwrap, docker-registry, skopeo, umoci)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let rootfs: string;
  let buildOut: { code: number; stdout: string; stderr: string };

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-ms-"));
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    const ref = `${reg.host}/test/multistage:v1`;
    buildOut = await cli(["-t", ref, "--build-arg", `BASE=${base}`, "--cache-dir", join(work, "cache"), CTX]);
    if (buildOut.code === 0) {
      await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${join(work, "img")}:v1`]);
      await run("umoci", ["unpack", "--image", `${join(work, "img")}:v1`, join(work, "bundle")]);
      rootfs = join(work, "bundle", "rootfs");
    }
  }, 180_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("builds, never touching the unused stage", () => {
    expect(buildOut.stderr).not.toMatch(/error\[/);
    expect(buildOut.code).toBe(0);
    expect(buildOut.stdout + buildOut.stderr).not.toContain("this stage is never built");
    expect(buildOut.stdout).not.toMatch(/\[unused\]/);
  });

  it("COPY --from brings the build stage's files, symlinks kept", async () => {
    expect(await readFile(join(rootfs, "opt/hello/greeting"), "utf8")).toBe("hello from a multi-stage build\n");
    expect(await readFile(join(rootfs, "opt/hello/built"), "utf8")).toMatch(/^built on (x86_64|aarch64)\n$/);
    expect((await lstat(join(rootfs, "opt/hello/link"))).isSymbolicLink()).toBe(true);
    expect(await readlink(join(rootfs, "opt/hello/link"))).toBe("greeting");
    await expect(lstat(join(rootfs, "opt/hello/unused"))).rejects.toThrow();
  });

  it("a base file deleted by RUN is gone; the recreated directory has only its new content", async () => {
    await expect(lstat(join(rootfs, "bin/vi"))).rejects.toThrow();
    expect((await lstat(join(rootfs, "bin/sh"))).isSymbolicLink()).toBe(true);
    const home = await stat(join(rootfs, "home/app"));
    expect([home.uid, home.gid]).toEqual([1000, 1000]);
  });

  it("--chown by name and group, --chmod octal and symbolic", async () => {
    const secret = await stat(join(rootfs, "opt/hello/secret.txt"));
    expect([secret.uid, secret.gid, secret.mode & 0o7777]).toEqual([1000, 50, 0o640]);
    const hello = await stat(join(rootfs, "usr/local/bin/hello"));
    // --chown=1000 without a group uses the uid as gid (Docker's rule); u+x,go-w on 0644 -> 0744.
    expect([hello.uid, hello.gid, hello.mode & 0o7777]).toEqual([1000, 1000, 0o744]);
  });

  it("USER by name and WORKDIR apply to RUN: uid, gid, groups, HOME, cwd", async () => {
    const w = join(rootfs, "home/app/work");
    expect((await readFile(join(w, "uid"), "utf8")).trim()).toBe("1000");
    expect((await readFile(join(w, "gid"), "utf8")).trim()).toBe("1000");
    expect((await readFile(join(w, "groups"), "utf8")).trim().split(" ").sort()).toEqual(["1000", "50"]);
    expect((await readFile(join(w, "home"), "utf8")).trim()).toBe("/home/app");
    expect((await readFile(join(w, "cwd"), "utf8")).trim()).toBe("/home/app/work");
    const made = await stat(join(w, "made-by-app"));
    expect([made.uid, made.gid]).toEqual([1000, 1000]);
    // The sandbox's mount points for resolv.conf and hosts do not leak into the image.
    await expect(lstat(join(rootfs, "etc/resolv.conf"))).rejects.toThrow();
    await expect(lstat(join(rootfs, "etc/hosts"))).rejects.toThrow();
  });

  it("the image's CMD runs under bwrap in the unpacked root and prints the expected output", async () => {
    const cfg = JSON.parse(await readFile(join(work, "bundle", "config.json"), "utf8"));
    const args: string[] = cfg.process.args;
    expect(args).toEqual(["/usr/local/bin/hello"]);
    const { stdout } = await run("bwrap", [
      "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid", "--die-with-parent",
      "--uid", "0", "--chdir", "/", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--", ...args,
    ]);
    expect(stdout).toBe("hello from a multi-stage build\nrunning as root\n");
  });
});

describe.skipIf(!ready)("parallel stages on one base (needs root, bwrap, docker-registry)", () => {
  it("share one download and one extraction of each base layer", async () => {
    const reg = await startRegistry();
    const proxy = await startFaultProxy({ port: reg.port });
    const work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-par-"));
    try {
      const base = `${reg.host}/base/busybox:latest`;
      await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "base-cache") });
      const ctx = join(work, "ctx");
      await mkdir(ctx);
      await writeFile(
        join(ctx, "Dockerfile"),
        "ARG BASE\nFROM ${BASE} AS a\nRUN echo a > /a\nFROM ${BASE} AS b\nRUN echo b > /b\nFROM ${BASE} AS c\nRUN echo c > /c\n" +
          "FROM ${BASE}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n",
      );
      // Through the proxy, which logs every request; the cache dir is new, so everything is pulled.
      const viaProxy = `${proxy.host}/base/busybox:latest`;
      const out = await cli(["--no-push", "--build-arg", `BASE=${viaProxy}`, "--cache-dir", join(work, "cache"), ctx]);
      expect(out.stderr).not.toMatch(/error\[/);
      expect(out.code).toBe(0);
      const blobGets = proxy.log.filter((r) => r.method === "GET" && /\/blobs\/sha256:/.test(r.path)).map((r) => r.path);
      const layers = new Set(blobGets);
      expect(layers.size).toBeGreaterThan(0);
      // Each blob (config and layers) fetched once, though four stages start from the base at once.
      expect(blobGets.length, blobGets.join("\n")).toBe(layers.size);
      const extracted = await readdir(join(work, "cache", "rootfs", "layers"));
      const leftovers = await readdir(join(work, "cache", "rootfs", "tmp")).catch(() => []);
      expect(leftovers).toEqual([]);
      expect(extracted.length).toBeGreaterThan(0);
    } finally {
      await proxy.stop();
      await reg.stop();
      await rm(work, { recursive: true, force: true });
    }
  }, 120_000);
});
