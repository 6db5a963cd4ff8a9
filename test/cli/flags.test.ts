import { resolve } from "node:path";
/**
 * Flag parsing for `ocibuild build`: docker build, buildx and kaniko spellings
 * map to the same library options; unknown and unsupported flags fail with exit
 * status 2 naming the flag; every command has --help with examples.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseBuildArgs } from "../../src/cli/commands/build-options.js";
import { parseOutput } from "../../src/cli/commands/output-flags.js";
import { main } from "../../src/cli/main.js";
import { captureIO } from "../dockerfile/cli-io.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-flags-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function io(env: Record<string, string> = {}, stdin?: string) {
  const cap = captureIO({ cwd: work, stdin });
  cap.io.env = env;
  return cap;
}

async function parse(args: string[], env: Record<string, string> = {}, stdin?: string) {
  return parseBuildArgs(args, io(env, stdin).io);
}

async function run(args: string[]) {
  const cap = io();
  const code = await main(args, cap.io);
  return { code, stdout: cap.stdout(), stderr: cap.stderr() };
}

describe("docker and kaniko spellings give the same options", () => {
  it("-t/--tag/-d/--destination are one repeatable list", async () => {
    const a = await parse(["-t", "127.0.0.1:5000/a:1", "--tag=127.0.0.1:5000/a:2", "."]);
    const b = await parse(["-d", "127.0.0.1:5000/a:1", "--destination", "127.0.0.1:5000/a:2", "."]);
    expect(a.options.tags).toEqual(["127.0.0.1:5000/a:1", "127.0.0.1:5000/a:2"]);
    expect(b.options.tags).toEqual(a.options.tags);
    expect(a.options.push).toBe(true);
  });

  it("-f/--file/--dockerfile resolve against the working directory; - reads stdin", async () => {
    for (const flag of ["-f", "--file", "--dockerfile"]) {
      const r = await parse([flag, "docker/Dockerfile.prod", "ctx"]);
      expect(r.options.dockerfile).toBe(join(work, "docker/Dockerfile.prod"));
      expect(r.options.context).toBe(join(work, "ctx"));
    }
    const s = await parse(["-f", "-", "."], {}, "FROM scratch\n");
    expect(s.options.dockerfileText).toBe("FROM scratch\n");
    expect(s.options.dockerfile).toBeUndefined();
  });

  it("kaniko's --context dir://PATH, -c and a positional context are the same", async () => {
    const a = await parse(["--context", "dir:///workspace/app"]);
    const b = await parse(["-c", "/workspace/app"]);
    const c = await parse(["/workspace/app"]);
    expect(a.options.context).toBe("/workspace/app");
    expect(b.options.context).toBe("/workspace/app");
    expect(c.options.context).toBe("/workspace/app");
    await expect(parse(["--context", "s3://bucket/ctx.tar.gz"])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    await expect(parse(["--context", "/a", "/b"])).rejects.toMatchObject({ code: "USAGE" });
  });

  it("a context from an archive, a git URL or stdin: as the library takes it, with --context-sub-path, --git and -f", async () => {
    const tar = await parse(["--context", "tar://ctx.tar.gz", "-f", "docker/Dockerfile"]);
    expect(tar.options.context).toBe(`tar://${join(work, "ctx.tar.gz")}`);
    // In an archive or a repository, a relative -f is inside it.
    expect(tar.options.dockerfile).toBe("docker/Dockerfile");
    const git = await parse(["--context-sub-path", "svc", "--git", "branch=dev,single-branch=true", "https://example.test/org/app.git"]);
    expect(git.options.context).toBe("https://example.test/org/app.git#dev:svc");
    expect((await parse(["git://example.test/app.git#v1:a", "--context-sub-path", "b", "--git", "branch=dev"])).options.context).toBe("git://example.test/app.git#v1:a/b");
    const stdin = await parse(["-"]);
    expect(stdin.options.context).toBe("-");
    expect(stdin.options.contextStream).toBeDefined();
    await expect(parse(["-f", "-", "-"])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("both") });
    await expect(parse(["--context-sub-path", "x", "-"])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    await expect(parse(["--git", "recurse-submodules=true", "."])).rejects.toMatchObject({ code: "USAGE_UNSUPPORTED_FLAG" });
    await expect(parse(["--git", "depth=1", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    const warned = io();
    await parseBuildArgs(["--git", "branch=main", "."], warned.io);
    expect(warned.stderr()).toContain("warning: --git branch=main is ignored: the context is not a git repository");
  });

  it("--build-context NAME=VALUE: a relative directory is the working directory's, other values kept", async () => {
    const r = await parse(["--build-context", "src=../src", "--build-context", "base=docker-image://reg.lan/base@sha256:" + "a".repeat(64), "--build-context", "lay=oci-layout:///l:v1", "."]);
    expect(r.options.buildContexts).toEqual({ src: join(work, "../src"), base: `docker-image://reg.lan/base@sha256:${"a".repeat(64)}`, lay: "oci-layout:///l:v1" });
    await expect(parse(["--build-context", "novalue", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    await expect(parse(["--build-context", "a=x", "--build-context", "a=y", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("twice") });
  });

  it("--build-arg K=V and K (from the environment; absent when unset); --label", async () => {
    const r = await parse(["--build-arg", "A=1", "--build-arg", "FROM_ENV", "--build-arg", "UNSET", "--build-arg=E=", "--label", "k=v=w", "."], { FROM_ENV: "env value" });
    expect(r.options.buildArgs).toEqual({ A: "1", FROM_ENV: "env value", E: "" });
    expect(r.options.labels).toEqual({ k: "v=w" });
    await expect(parse(["--label", "novalue", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });

  it("--platform and --custom-platform take one platform or a comma list; a bad one is a usage error", async () => {
    const arm64 = { os: "linux", architecture: "arm64" };
    const amd64 = { os: "linux", architecture: "amd64" };
    expect((await parse(["--platform", "linux/arm64/v8", "."])).options.platform).toEqual([arm64]);
    expect((await parse(["--custom-platform=linux/amd64", "."])).options.platform).toEqual([amd64]);
    expect((await parse(["--platform", "linux/amd64,linux/arm64", "."])).options.platform).toEqual([amd64, arm64]);
    await expect(parse(["--platform", "linux/amd64,not a platform", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("--platform") });
  });

  it("--target, --cache-dir, --no-push, --no-cache, --reproducible and SOURCE_DATE_EPOCH", async () => {
    const r = await parse(["--target", "app", "--cache-dir", "cache", "--no-push", "--no-cache", "-t", "x.io/a:1", "--reproducible", "."]);
    expect(r.options.target).toBe("app");
    expect(r.options.cacheDir).toBe(join(work, "cache"));
    expect(r.options.push).toBe(false);
    expect((r.options as { noCache?: boolean }).noCache).toBe(true);
    expect(r.options.sourceDateEpoch).toBe(0);
    const e = await parse(["--reproducible", "."], { SOURCE_DATE_EPOCH: "1700000000" });
    expect(e.options.sourceDateEpoch).toBe(1700000000);
    await expect(parse(["."], { SOURCE_DATE_EPOCH: "yesterday" })).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });

  it("registry flags: --insecure-registry, --registry-certificate, --skip-tls-verify, --registry-mirror, --jobs", async () => {
    const r = await parse([
      "--insecure-registry", "reg.lan:5000", "--registry-certificate", "reg.lan=/etc/ca.pem", "--skip-tls-verify",
      "--registry-mirror", "mirror.lan", "--jobs", "8", ".",
    ]);
    expect(r.options.registry).toMatchObject({
      insecureRegistries: ["reg.lan:5000"],
      registryCertificates: { "reg.lan": "/etc/ca.pem" },
      skipTlsVerify: true,
      registryMirrors: ["mirror.lan"],
      concurrency: 8,
    });
    await expect(parse(["--jobs", "0", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });

  it("--registry-timeout takes a duration of at least 1s (build, copy and inspect share it)", async () => {
    expect((await parse(["--registry-timeout", "5m", "."])).options.registry).toMatchObject({ timeoutSeconds: 300 });
    expect((await parse(["--registry-timeout=90s", "."])).options.registry).toMatchObject({ timeoutSeconds: 90 });
    expect((await parse(["."])).options.registry?.timeoutSeconds).toBeUndefined();
    for (const bad of ["60", "100ms", "soon"]) {
      await expect(parse(["--registry-timeout", bad, "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("--registry-timeout") });
    }
  });

  it("--max-layer-size takes a byte count with docker's binary units; anything else is a usage error naming it", async () => {
    expect((await parse(["--max-layer-size", "4g", "."])).options.maxLayerSize).toBe(4 * 2 ** 30);
    expect((await parse(["--max-layer-size=512MiB", "."])).options.maxLayerSize).toBe(512 * 2 ** 20);
    expect((await parse(["--max-layer-size", "1.5k", "."])).options.maxLayerSize).toBe(1536);
    expect((await parse(["--max-layer-size", "1048576", "."])).options.maxLayerSize).toBe(1048576);
    expect((await parse(["."])).options.maxLayerSize).toBeUndefined();
    for (const bad of ["0", "-1", "4x", "lots", "1e9", ""]) {
      await expect(parse(["--max-layer-size", bad, "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("--max-layer-size") });
    }
  });

  it("digest and metadata files are resolved against the working directory", async () => {
    const r = await parse([
      "-d", "x.io/a:1", "--digest-file", "d", "--image-name-with-digest-file", "n", "--image-name-tag-with-digest-file", "nt", "--iidfile", "i", "--metadata-file", "m.json", ".",
    ]);
    expect(r.files).toEqual({ digest: join(work, "d"), imageNameWithDigest: join(work, "n"), imageNameTagWithDigest: join(work, "nt"), iid: join(work, "i"), metadata: join(work, "m.json") });
    await expect(parse(["--image-name-with-digest-file", "n", "."])).rejects.toMatchObject({ code: "USAGE_MISSING_ARGUMENT" });
  });

  it("cache flags: --no-cache, --no-cache-write, --cache-repo, --cache-ttl (Go durations), --dry-run", async () => {
    const r = await parse(["--no-cache", "--no-cache-write", "--cache-repo", "127.0.0.1:5000/cache", "--cache-ttl", "1h30m", "."]);
    expect(r.options).toMatchObject({ noCache: true, noCacheWrite: true, cacheRepo: "127.0.0.1:5000/cache", cacheTtlSeconds: 5400 });
    expect((await parse(["--cache-ttl=336h", "."])).options.cacheTtlSeconds).toBe(14 * 24 * 3600);
    expect((await parse(["--cache-ttl=7d", "."])).options.cacheTtlSeconds).toBe(7 * 24 * 3600);
    await expect(parse(["--cache-ttl", "two weeks", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("--cache-ttl") });
    await expect(parse(["--cache-ttl", "10", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    await expect(parse(["--cache-repo", "Not A Repo", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    const d = await parse(["--dry-run", "-t", "x.io/a:1", "-o", "oci:out", "."]);
    expect(d.options).toMatchObject({ dryRun: true, push: false, outputs: [] });
  });

  it("--progress takes auto, tty, plain or json; -q/--quiet", async () => {
    for (const m of ["auto", "tty", "plain", "json"]) expect((await parse(["--progress", m, "."])).progress).toBe(m);
    expect((await parse(["."])).progress).toBe("auto");
    expect((await parse(["-q", "."])).quiet).toBe(true);
    await expect(parse(["--progress=fancy", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });

  it("--network default/none/host set the RUN default (host only with --allow network.host); anything else is a usage error naming it", async () => {
    await expect(parse(["--network", "host", "."])).rejects.toMatchObject({ code: "USAGE_ENTITLEMENT_REQUIRED", message: expect.stringContaining("--network=host") });
    await expect(parse(["--network", "host", "--allow", "security.insecure", "."])).rejects.toMatchObject({ code: "USAGE_ENTITLEMENT_REQUIRED" });
    expect((await parse(["--network", "host", "--allow", "network.host", "."])).options).toMatchObject({ network: "host", allow: ["network.host"] });
    expect((await parse(["--network=none", "."])).options.network).toBe("none");
    await expect(parse(["--network=bridge", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE", message: expect.stringContaining("--network=bridge") });
  });

  it("--secret, --ssh and --allow become build options; secret values are never echoed in errors", async () => {
    const o = (await parse(["--secret", "id=npm,src=.npmrc", "--secret", "id=tok,env=TOKEN", "--ssh", "default", "--ssh", "deploy=keys/id_ed25519", "--allow", "security.insecure", "."])).options;
    expect(o.secrets).toEqual([{ id: "npm", src: resolve(work, ".npmrc") }, { id: "tok", env: "TOKEN" }]);
    expect(o.ssh).toEqual([{ id: "default", paths: [] }, { id: "deploy", paths: [resolve(work, "keys/id_ed25519")] }]);
    expect(o.allow).toEqual(["security.insecure"]);
    await expect(parse(["--secret", "src=/x/hunter2", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
    await expect(parse(["--secret", "src=/x/hunter2", "."])).rejects.not.toMatchObject({ message: expect.stringContaining("hunter2") });
    await expect(parse(["--allow", "everything", "."])).rejects.toMatchObject({ code: "USAGE_BAD_VALUE" });
  });
});

describe("--output forms", () => {
  const cwd = "/w";
  it("transport forms: oci:, oci-archive:, docker-archive:", () => {
    expect(parseOutput("oci:out", cwd)).toEqual({ type: "oci", dest: "/w/out" });
    expect(parseOutput("oci:out:v1", cwd)).toEqual({ type: "oci", dest: "/w/out", tag: "v1" });
    expect(parseOutput("oci-archive:img.tar", cwd)).toEqual({ type: "oci-archive", dest: "/w/img.tar" });
    expect(parseOutput("oci-archive:/tmp/img.tar:v2", cwd)).toEqual({ type: "oci-archive", dest: "/tmp/img.tar", tag: "v2" });
    expect(parseOutput("docker-archive:img.tar", cwd)).toEqual({ type: "docker-archive", dest: "/w/img.tar" });
    expect(parseOutput("docker-archive:img.tar:app:v1", cwd)).toEqual({ type: "docker-archive", dest: "/w/img.tar", tags: ["app:v1"] });
  });

  it("buildx forms: type=oci (a tar unless tar=false), type=docker, type=registry, type=image,push=true", () => {
    expect(parseOutput("type=oci,dest=img.tar", cwd)).toEqual({ type: "oci-archive", dest: "/w/img.tar" });
    expect(parseOutput("type=oci,dest=layout,tar=false", cwd)).toEqual({ type: "oci", dest: "/w/layout" });
    expect(parseOutput("type=oci,dest=img.tar,name=reg/app:v3", cwd)).toEqual({ type: "oci-archive", dest: "/w/img.tar", tag: "v3" });
    expect(parseOutput("type=docker,dest=d.tar,name=app:v1", cwd)).toEqual({ type: "docker-archive", dest: "/w/d.tar", tags: ["app:v1"] });
    expect(parseOutput("type=registry", cwd)).toEqual({ type: "registry" });
    expect(parseOutput("type=image,push=true", cwd)).toEqual({ type: "registry" });
    expect(parseOutput("type=registry,name=reg.lan/a:1", cwd)).toEqual({ type: "registry", names: ["reg.lan/a:1"] });
    expect(parseOutput('Type=image,"name=reg.lan/a:1,reg.lan/a:2",push=true', cwd)).toEqual({ type: "registry", names: ["reg.lan/a:1", "reg.lan/a:2"] });
    expect(parseOutput('type=oci,"dest=a ""b"".tar"', cwd)).toEqual({ type: "oci-archive", dest: '/w/a "b".tar' });
  });

  it("unsupported outputs fail naming what is wrong", () => {
    expect(() => parseOutput("type=local,dest=out", cwd)).toThrow(/type=local is not supported/);
    expect(() => parseOutput("type=docker", cwd)).toThrow(/needs dest=PATH/);
    expect(() => parseOutput("type=oci,dest=x,oci-mediatypes=true", cwd)).toThrow(/"oci-mediatypes" is not implemented for type=oci/);
    expect(parseOutput("type=oci,dest=x,compression=zstd,force-compression=true", cwd)).toEqual({ type: "oci-archive", dest: "/w/x" });
    expect(() => parseOutput("somewhere", cwd)).toThrow(/--output somewhere: not a supported output/);
  });

  it("--oci-layout-path and --tar-path (kaniko) add outputs; type=registry needs a tag", async () => {
    const r = await parse(["--oci-layout-path", "layout", "--tar-path", "image.tar", "-o", "oci-archive:x.tar", "."]);
    expect(r.options.outputs).toEqual([
      { type: "oci-archive", dest: join(work, "x.tar") },
      { type: "oci", dest: join(work, "layout"), tag: "latest" },
      { type: "docker-archive", dest: join(work, "image.tar") },
    ]);
    await expect(parse(["--output", "type=registry", "."])).rejects.toMatchObject({ code: "USAGE_MISSING_ARGUMENT" });
  });
});

describe("the CLI refuses what it does not do, with exit status 2", () => {
  it("an unknown flag is named (long and short)", async () => {
    const a = await run(["build", "--frobnicate", "."]);
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/^error\[USAGE_UNKNOWN_FLAG\]: unknown flag: --frobnicate$/m);
    const b = await run(["-Z", "."]);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain("unknown flag: -Z");
  });

  it.each([
    ["--cache-from", "type=registry,ref=x"],
    ["--load", undefined],
  ])("%s is refused by name, never ignored", async (flag, value) => {
    const r = await run(["build", flag, ...(value !== undefined ? [value] : []), "."]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^error\\[USAGE_UNSUPPORTED_FLAG\\]: flag ${flag} is not supported`, "m"));
  });

  it("a missing context, a flag without its value and a bad -t are usage errors", async () => {
    expect((await run(["build"])).code).toBe(2);
    const v = await run(["build", "--target"]);
    expect(v.code).toBe(2);
    expect(v.stderr).toContain("--target needs a value");
    const t = await run(["build", "-t", "Bad Ref!", "."]);
    expect(t.code).toBe(2);
    expect(t.stderr).toMatch(/error\[USAGE_BAD_VALUE\]: -t Bad Ref!: invalid image reference/);
  });

  it("a build failure exits 1 with error[CODE] and no stack trace; --debug adds it", async () => {
    const ctx = join(work, "broken");
    await rm(ctx, { recursive: true, force: true });
    await import("node:fs/promises").then((f) => f.mkdir(ctx));
    await writeFile(join(ctx, "Dockerfile"), "FROM scratch\nFROBNICATE x\n");
    const r = await run(["--no-push", "--cache-dir", join(work, "cache"), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[DOCKERFILE_[A-Z_]+\]/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const d = await run(["--debug", "--no-push", "--cache-dir", join(work, "cache"), ctx]);
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(/\n\s+at /);
  });
});

describe("--help for each command, with examples", () => {
  it.each(["build", "copy", "pull", "push", "inspect", "parse"])("ocibuild %s --help", async (cmd) => {
    const r = await run([cmd, "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: ocibuild/m);
    if (cmd !== "parse") expect(r.stdout).toMatch(/\nExamples:\n {2}ocibuild /);
  });

  it("build --help lists both spellings and every output form", async () => {
    const r = await run(["--help"]);
    expect(r.code).toBe(0);
    const h = await run(["build", "-h"]);
    for (const s of ["-t, -d, --tag, --destination", "-f, --file, --dockerfile", "--tar-path", "--oci-layout-path", "--image-name-tag-with-digest-file", "docker-archive:FILE", "--progress MODE"]) {
      expect(h.stdout).toContain(s);
    }
  });

  it("ocibuild --help shows the build usage and its common flags, then the commands", async () => {
    for (const flag of ["--help", "-h", "help"]) {
      const r = await run([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Usage: ocibuild \[build\] \[flags\] CONTEXT/);
      const flags = r.stdout.indexOf("Common flags:");
      const commands = r.stdout.indexOf("Commands:");
      expect(flags).toBeGreaterThan(0);
      expect(commands).toBeGreaterThan(flags);
      for (const s of ["-t, -d, --tag, --destination REF", "--build-arg KEY[=VALUE]", "--no-push", "-o, --output OUT"]) expect(r.stdout.slice(flags, commands)).toContain(s);
      expect(r.stdout.slice(commands)).toMatch(/^ {2}inspect /m);
    }
  });

  it.each(["build", "plan", "copy", "pull", "push", "inspect", "parse", "setup", "buildkit", "unshare"])("ocibuild help %s is %s --help", async (cmd) => {
    const a = await run(["help", cmd]);
    const b = await run([cmd, "--help"]);
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/^Usage: ocibuild/);
    expect(a.stdout).toBe(b.stdout);
  });

  it("ocibuild help NOPE names the commands", async () => {
    const r = await run(["help", "nope"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command "nope"[\s\S]*hint: commands: build, plan/);
  });

  it("build --help lists the compatibility flags and the refused ones with their pointers", async () => {
    const h = (await run(["build", "--help"])).stdout;
    expect(h).toMatch(/kaniko and docker flags accepted for compatibility:\n[\s\S]*--insecure-pull/);
    expect(h).toMatch(/refused, with what to use instead:\n[\s\S]*--squash +\(refused\) copy the result into a fresh stage/);
  });

  it("no arguments prints usage to stderr and exits 2", async () => {
    const r = await run([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^Usage: ocibuild/);
  });
});
