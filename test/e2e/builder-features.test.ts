/**
 * COPY heredocs, ADD of archives and URLs, ONBUILD triggers and RUN failures,
 * end to end on the busybox base in a real registry, checked with umoci.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci") && have("skopeo");

describe.skipIf(!ready)("builder features (needs root, bwrap, docker-registry, umoci, skopeo)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let server: Server;
  let url: string;
  const payload = "downloaded bytes\n";

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-features-"));
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    server = createServer((req, res) => {
      if (req.url === "/files/tool.txt") {
        res.writeHead(200, { "last-modified": "Wed, 21 Oct 2015 07:28:00 GMT", "content-type": "text/plain" });
        res.end(payload);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const addr = server.address();
    url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
  }, 120_000);
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function buildAndUnpack(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
    const ctx = join(work, name);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), dockerfile);
    for (const [p, c] of Object.entries(files)) {
      await mkdir(join(ctx, p, ".."), { recursive: true });
      await writeFile(join(ctx, p), c);
    }
    await build({ context: ctx, buildArgs: { BASE: base }, cacheDir: join(work, "cache"), outputs: [{ type: "oci", dest: join(work, `${name}-img`), tag: "v1" }] });
    await run("umoci", ["unpack", "--image", `${join(work, `${name}-img`)}:v1`, join(work, `${name}-bundle`)]);
    return join(work, `${name}-bundle`, "rootfs");
  }

  it("COPY heredocs: expanded or literal by the delimiter's quoting, with --chmod", async () => {
    const root = await buildAndUnpack(
      "heredoc",
      `ARG BASE\nFROM \${BASE}\nARG NAME=world\nCOPY <<EOF /etc/greeting\nhello $NAME\nEOF\nCOPY --chmod=0755 <<"EOT" /usr/local/bin/\n#!/bin/sh\necho "$NAME"\nEOT\n`,
    );
    expect(await readFile(join(root, "etc/greeting"), "utf8")).toBe("hello world\n");
    expect(await readFile(join(root, "usr/local/bin/EOT"), "utf8")).toBe('#!/bin/sh\necho "$NAME"\n');
    expect((await stat(join(root, "usr/local/bin/EOT"))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(root, "etc/greeting"))).mode & 0o7777).toBe(0o644);
  });

  it("ADD extracts local tar.gz and tar.xz archives; a plain file is copied", async () => {
    const src = join(work, "archive-src");
    await mkdir(join(src, "pkg/bin"), { recursive: true });
    await writeFile(join(src, "pkg/bin/tool"), "#!/bin/sh\necho tool\n", { mode: 0o755 });
    await writeFile(join(src, "pkg/README"), "readme\n");
    const ctx = join(work, "add");
    await mkdir(ctx, { recursive: true });
    await pexec("tar", ["-czf", join(ctx, "pkg.tar.gz"), "-C", src, "pkg"]);
    await pexec("tar", ["-cJf", join(ctx, "pkg.txz"), "-C", src, "pkg"]);
    const root = await buildAndUnpack("add", `ARG BASE\nFROM \${BASE}\nADD pkg.tar.gz /opt/gz/\nADD pkg.txz /opt/xz\nADD plain.txt /opt/\n`, { "plain.txt": "just text\n" });
    expect(await readFile(join(root, "opt/gz/pkg/bin/tool"), "utf8")).toBe("#!/bin/sh\necho tool\n");
    expect((await stat(join(root, "opt/gz/pkg/bin/tool"))).mode & 0o777).toBe(0o755);
    expect(await readFile(join(root, "opt/xz/pkg/README"), "utf8")).toBe("readme\n");
    expect(await readFile(join(root, "opt/plain.txt"), "utf8")).toBe("just text\n");
    await expect(stat(join(root, "opt/gz/pkg.tar.gz"))).rejects.toThrow();
  });

  it("ADD of a URL downloads it with Last-Modified as mtime and mode 0600, verifying --checksum", async () => {
    const sum = createHash("sha256").update(payload).digest("hex");
    const root = await buildAndUnpack("url", `ARG BASE\nFROM \${BASE}\nADD --checksum=sha256:${sum} ${url}/files/tool.txt /opt/\n`);
    const st = await stat(join(root, "opt/tool.txt"));
    expect(await readFile(join(root, "opt/tool.txt"), "utf8")).toBe(payload);
    expect(st.mode & 0o7777).toBe(0o600);
    expect(st.mtime.toISOString()).toBe("2015-10-21T07:28:00.000Z");
    const bad = join(work, "badsum");
    await mkdir(bad, { recursive: true });
    await writeFile(join(bad, "Dockerfile"), `ARG BASE\nFROM \${BASE}\nADD --checksum=sha256:${"0".repeat(64)} ${url}/files/tool.txt /opt/\n`);
    const r = await cli(["--no-push", "--build-arg", `BASE=${base}`, "--cache-dir", join(work, "cache"), bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error\[BUILD_ADD_CHECKSUM_MISMATCH\]: Dockerfile:3: .*sha256:/);
  });

  it("ONBUILD triggers of a base run at the child's FROM and are not inherited", async () => {
    const parent = join(work, "onbuild-parent");
    await mkdir(parent, { recursive: true });
    await writeFile(join(parent, "Dockerfile"), `ARG BASE\nFROM \${BASE}\nONBUILD RUN echo "triggered" > /onbuild-ran\nONBUILD COPY data.txt /data.txt\n`);
    const parentRef = `${reg.host}/test/onbuild-parent:v1`;
    await build({ context: parent, tags: [parentRef], buildArgs: { BASE: base }, cacheDir: join(work, "cache") });
    const root = await buildAndUnpack("onbuild-child", `FROM ${parentRef}\nRUN cat /onbuild-ran\n`, { "data.txt": "from the child's context\n" });
    expect(await readFile(join(root, "onbuild-ran"), "utf8")).toBe("triggered\n");
    expect(await readFile(join(root, "data.txt"), "utf8")).toBe("from the child's context\n");
    const cfg = JSON.parse((await run("skopeo", ["inspect", "--config", `oci:${join(work, "onbuild-child-img")}:v1`])).stdout);
    expect(cfg.config.OnBuild ?? []).toEqual([]);
  });

  it("a failing RUN names the line, the command and the exit code, and shows the last output", async () => {
    const ctx = join(work, "fail");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `ARG BASE\nFROM \${BASE}\nRUN echo first-line && echo "to stderr" >&2 && exit 3\n`);
    const out = join(work, "fail-out");
    const r = await cli(["--no-push", "--output", `oci:${out}`, "--build-arg", `BASE=${base}`, "--cache-dir", join(work, "cache"), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error\[BUILD_RUN_FAILED\]: Dockerfile:3: RUN echo first-line .* failed with exit code 3/);
    expect(r.stderr).toContain("to stderr");
    expect(r.stderr).not.toMatch(/\n\s+at /);
    await expect(stat(out)).rejects.toThrow();
  });
});
