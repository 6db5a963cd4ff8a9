/**
 * The walking skeleton end to end: build testdata/hello (FROM scratch + COPY +
 * config) with no daemon, push it to a real registry, and let independent tools
 * read it back: skopeo (config), umoci (files), oci-image-tool (layout).
 */
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const HELLO = resolve(__dirname, "../../testdata/hello");
const ready = haveRegistry() && have("skopeo") && have("umoci") && have("oci-image-tool") && isRoot;

describe.skipIf(!ready)("hello image end to end (needs root for overlay roots, docker-registry, skopeo, umoci, oci-image-tool)", () => {
  let reg: TestRegistry;
  let work: string;
  let digest: string;
  let ref: string;

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-hello-"));
    ref = `${reg.host}/team/hello:v1`;
  });
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("builds and pushes with no daemon, printing the digest", async () => {
    const r = await cli(["-t", ref, "--cache-dir", join(work, "cache"), "--digest-file", join(work, "digest"), HELLO]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    digest = (await readFile(join(work, "digest"), "utf8")).trim();
    expect(digest).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(r.stdout).toContain(`digest: ${digest}`);
    expect(r.stdout).toContain(`image: ${reg.host}/team/hello:v1@${digest}`);
  });

  it("skopeo reads the pushed manifest and the config Docker would write", async () => {
    const raw = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout);
    expect(raw.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    expect(raw.layers).toHaveLength(4); // WORKDIR + three COPYs; config instructions make no layers
    const { stdout: d } = await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${ref}`]);
    expect(d.trim()).toBe(digest);
    const cfg = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--config", `docker://${ref}`])).stdout);
    expect(cfg.os).toBe("linux");
    expect(cfg.rootfs.diff_ids).toHaveLength(4);
    const c = cfg.config;
    expect(c.Env).toEqual(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello from ocibuild", "APP_HOME=/app"]);
    expect(c.WorkingDir).toBe("/app");
    expect(c.User).toBe("1000:1000");
    expect(c.Entrypoint).toEqual(["/usr/local/bin/run.sh"]);
    expect(c.Cmd).toEqual(["--port", "8080"]);
    expect(c.ExposedPorts).toEqual({ "8080/tcp": {}, "9000/udp": {} });
    expect(c.Volumes).toEqual({ "/data": {} });
    expect(c.Labels).toEqual({ "org.opencontainers.image.title": "hello", version: "1.0" });
    expect(c.StopSignal).toBe("SIGTERM");
    const hist = cfg.history as { created_by: string; empty_layer?: boolean }[];
    expect(hist.map((h) => h.created_by.replace(/ # ocibuild$/, ""))).toEqual([
      "ARG VERSION=1.0",
      "LABEL org.opencontainers.image.title=hello version=1.0",
      "ENV GREETING=hello from ocibuild APP_HOME=/app",
      "WORKDIR /app",
      "COPY hello.txt ./",
      "COPY app/ ./",
      "COPY --chmod=0755 app/run.sh /usr/local/bin/",
      "EXPOSE 8080/tcp 9000/udp",
      "USER 1000:1000",
      "VOLUME [/data]",
      "STOPSIGNAL SIGTERM",
      'ENTRYPOINT ["/usr/local/bin/run.sh"]',
      'CMD ["--port","8080"]',
    ]);
    // Exactly the layer-making steps are not empty_layer.
    expect(hist.filter((h) => !h.empty_layer)).toHaveLength(4);
  });

  it("umoci unpacks the pushed image with the copied files, modes and owners; ignored files are absent", async () => {
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${join(work, "pulled")}:v1`]);
    const bundle = join(work, "bundle");
    await run("umoci", ["unpack", "--image", `${join(work, "pulled")}:v1`, bundle]);
    const rootfs = join(bundle, "rootfs");
    expect(await readFile(join(rootfs, "app/hello.txt"), "utf8")).toBe("hello, world\n");
    expect(await readFile(join(rootfs, "app/config.json"), "utf8")).toBe('{"name":"hello"}\n');
    const runSh = await stat(join(rootfs, "usr/local/bin/run.sh"));
    expect(runSh.mode & 0o7777).toBe(0o755);
    expect(runSh.uid).toBe(0);
    expect((await stat(join(rootfs, "app/run.sh"))).mode & 0o7777).toBe(0o644);
    // .dockerignore excludes Dockerfile and *.md; "COPY app/ ./" copies the directory's contents.
    await expect(stat(join(rootfs, "app/README.md"))).rejects.toThrow();
    await expect(stat(join(rootfs, "app/Dockerfile"))).rejects.toThrow();
    await expect(stat(join(rootfs, "app/app"))).rejects.toThrow();
  });

  it("writes the image to an OCI layout that oci-image-tool validates; with SOURCE_DATE_EPOCH twice, the same digest", async () => {
    const env = { SOURCE_DATE_EPOCH: "1700000000" };
    const outs = [join(work, "layout1"), join(work, "layout2")];
    const digests: string[] = [];
    for (const out of outs) {
      const r = await cli(["--no-push", "--output", `oci:${out}:v1`, "--cache-dir", join(work, "cache"), HELLO], { env });
      expect(r.code).toBe(0);
      const { stdout, stderr } = await run("oci-image-tool", ["validate", "--type", "image", "--ref", "name=v1", out]);
      expect(`${stdout}${stderr}`).toMatch(/validation succeeded/i);
      const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
      expect(index.manifests).toHaveLength(1);
      expect(index.manifests[0].annotations["org.opencontainers.image.ref.name"]).toBe("v1");
      digests.push(index.manifests[0].digest);
    }
    expect(digests[1]).toBe(digests[0]);
    const cfg = JSON.parse((await run("skopeo", ["inspect", "--config", `oci:${outs[0]}:v1`])).stdout);
    expect(cfg.created).toBe("2023-11-14T22:13:20Z");
  });

  it("a Dockerfile error names the file and line and exits 1 without a stack trace", async () => {
    const ctx = join(work, "bad");
    await run("mkdir", ["-p", ctx]);
    await run("sh", ["-c", `printf 'FROM scratch\\nCOPY a /a\\nCOPPY b /b\\n' > ${ctx}/Dockerfile`]);
    const r = await cli(["--no-push", "--cache-dir", join(work, "cache"), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[DOCKERFILE_[A-Z_]+\]: .*Dockerfile:3/m);
    expect(r.stderr).toContain("COPPY b /b");
    expect(r.stderr).toMatch(/COPY/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("a missing COPY source fails with the line and no half-written layout", async () => {
    const ctx = join(work, "missing");
    await run("mkdir", ["-p", ctx]);
    await run("sh", ["-c", `printf 'FROM scratch\\nCOPY nothere.txt /x\\n' > ${ctx}/Dockerfile`]);
    const out = join(work, "never");
    const r = await cli(["--no-push", "--output", `oci:${out}`, "--cache-dir", join(work, "cache"), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error\[BUILD_COPY_SOURCE_NOT_FOUND\]: Dockerfile:2: COPY source "nothere.txt" not found/);
    await expect(stat(out)).rejects.toThrow();
  });
});
