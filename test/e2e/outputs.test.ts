/**
 * Every output format of one real build, read back by independent tools:
 * docker-archive by skopeo (inspect, copy to an OCI layout, then umoci unpack),
 * oci-archive by skopeo and (extracted) oci-image-tool, layouts by
 * oci-image-tool; the digest files and the metadata file compared with what
 * the registry serves; the --progress=json stream validated event by event.
 * The base image's layers are only in the registry (a separate cache dir), so
 * the archives also stream blobs from the registry.
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateEvent, type BuildEvent } from "../../src/builder/events.js";
import { fileEntry, writeTarFile } from "../../src/oci/oci-archive.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap") && have("skopeo") && have("umoci") && have("oci-image-tool") && have("tar");

describe.skipIf(!ready)("build outputs read back by skopeo, umoci and oci-image-tool (needs root, bwrap, docker-registry, skopeo, umoci, oci-image-tool)", () => {
  let reg: TestRegistry;
  let work: string;
  let ref: string;
  let out: { code: number; stdout: string; stderr: string };
  let registryDigest: string;
  const p = (name: string) => join(work, name);

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-outputs-"));
    const base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: p("base"), cacheDir: p("cache-base") });
    await mkdir(p("ctx"));
    await writeFile(p("ctx/Dockerfile"), "ARG BASE\nFROM $BASE\nRUN echo built > /built.txt\nCOPY hello.txt /srv/hello.txt\nCMD [\"cat\", \"/srv/hello.txt\"]\n");
    await writeFile(p("ctx/hello.txt"), "hello, outputs\n");
    ref = `${reg.host}/out/app:v1`;
    out = await cli([
      "-t", ref, "--destination", `${reg.host}/out/app:stable`, "--build-arg", `BASE=${base}`, "--cache-dir", p("cache"), "--progress=json",
      "--output", `docker-archive:${p("img.docker.tar")}`, "-o", `oci-archive:${p("img.oci.tar")}`, "--output", `type=oci,dest=${p("layout")},tar=false`,
      "--tar-path", p("kaniko.tar"), "--oci-layout-path", p("kaniko-layout"),
      "--digest-file", p("digest"), "--image-name-with-digest-file", p("name-digest"), "--image-name-tag-with-digest-file", p("name-tag-digest"),
      "--iidfile", p("iid"), "--metadata-file", p("metadata.json"), p("ctx"),
    ]);
    if (out.code === 0) registryDigest = (await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${ref}`])).stdout.trim();
  }, 240_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("builds and pushes", () => {
    expect(out.stderr).not.toMatch(/error\[/);
    expect(out.code).toBe(0);
    expect(registryDigest).toMatch(/^sha256:[a-f0-9]{64}$/);
  });

  it("--progress=json: every line is one event valid against its type, in a consistent order", () => {
    const events = out.stdout.trim().split("\n").map((l) => JSON.parse(l) as BuildEvent);
    for (const e of events) expect(validateEvent(e), JSON.stringify(e)).toEqual([]);
    const types = new Set(events.map((e) => e.type));
    for (const t of ["step-start", "step-end", "push", "progress", "output-written", "result"]) expect(types, t).toContain(t);
    // Each step-start is followed by its step-end; RUN output belongs to a started step.
    const open = new Set<string>();
    for (const e of events) {
      if (e.type === "step-start") open.add(`${e.stage}/${e.step}`);
      if (e.type === "output") expect(open).toContain(`${e.stage}/${e.step}`);
      if (e.type === "step-end") expect(open.delete(`${e.stage}/${e.step}`)).toBe(true);
    }
    expect(open.size).toBe(0);
    const last = events[events.length - 1]!;
    expect(last.type).toBe("result");
    if (last.type !== "result") return;
    expect(last.digest).toBe(registryDigest);
    expect(last.references).toContain(`${reg.host}/out/app:v1@${registryDigest}`);
    expect(last.references).toContain(`docker-archive:${p("img.docker.tar")}`);
    expect(events.filter((e) => e.type === "output-written")).toHaveLength(5);
    // What was pushed adds up to the manifest's blobs.
    const pushed = events.filter((e): e is Extract<BuildEvent, { type: "push" }> => e.type === "push");
    expect(pushed.every((e) => e.reference === `${reg.host}/out/app`)).toBe(true);
  });

  it("the digest files match what the registry serves for every tag", async () => {
    for (const tag of ["v1", "stable"]) {
      const d = (await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${reg.host}/out/app:${tag}`])).stdout.trim();
      expect(d).toBe(registryDigest);
    }
    expect(await readFile(p("digest"), "utf8")).toBe(registryDigest);
    // docker's image ID: the config digest, the ID `docker load` of the archive gives.
    const configDigest = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout).config.digest;
    expect(configDigest).toMatch(/^sha256:/);
    expect(await readFile(p("iid"), "utf8")).toBe(configDigest);
    expect(await readFile(p("name-digest"), "utf8")).toBe(`${reg.host}/out/app@${registryDigest}\n`.repeat(2));
    expect(await readFile(p("name-tag-digest"), "utf8")).toBe(`${reg.host}/out/app:v1@${registryDigest}\n${reg.host}/out/app:stable@${registryDigest}\n`);
    // The named digests resolve in the registry.
    const byDigest = (await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${reg.host}/out/app@${registryDigest}`])).stdout.trim();
    expect(byDigest).toBe(registryDigest);
  });

  it("--metadata-file: digest and descriptor of the registry's manifest, steps and cache summary", async () => {
    const meta = JSON.parse(await readFile(p("metadata.json"), "utf8"));
    const raw = (await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout;
    expect(meta["containerimage.digest"]).toBe(registryDigest);
    expect(meta["containerimage.config.digest"]).toBe(JSON.parse(raw).config.digest);
    expect(meta["containerimage.descriptor"]).toEqual({ mediaType: JSON.parse(raw).mediaType, digest: registryDigest, size: Buffer.byteLength(raw) });
    expect(meta["image.name"]).toBe(`${reg.host}/out/app:v1,${reg.host}/out/app:stable`);
    type Step = { instruction: string; cached: boolean; reason?: string; line: number; layer: string | null; seconds: number; base?: { resolved: string } };
    // The FROM step first (how the base was resolved, always said), then the instructions.
    const [from, ...steps] = meta["ocibuild.steps"] as Step[];
    expect(from).toMatchObject({ line: 2, layer: null, base: { resolved: expect.stringMatching(/^(cache|registry)$/) }, reason: expect.stringMatching(/^resolved /) });
    expect(steps.map((s) => s.line)).toEqual([3, 4, 5]);
    expect(steps[0]!.instruction).toBe("RUN echo built > /built.txt");
    for (const s of steps) expect(s.cached || typeof s.reason === "string").toBe(true);
    const cache = meta["ocibuild.cache"];
    expect(cache.hits + cache.misses).toBe(steps.length);
    expect(cache.hits).toBe(steps.filter((s) => s.cached).length);
  });

  it("docker-archive: skopeo inspects it (same config), copies it to an OCI layout, umoci unpacks the files", async () => {
    for (const file of ["img.docker.tar", "kaniko.tar"]) {
      const cfgRaw = (await run("skopeo", ["inspect", "--config", "--raw", `docker-archive:${p(file)}`])).stdout;
      const registryCfg = (await run("skopeo", ["inspect", "--tls-verify=false", "--config", "--raw", `docker://${ref}`])).stdout;
      expect(cfgRaw).toBe(registryCfg);
      const info = JSON.parse((await run("skopeo", ["inspect", `docker-archive:${p(file)}`])).stdout);
      expect(info.Layers).toHaveLength(JSON.parse(registryCfg).rootfs.diff_ids.length);
    }
    const manifest = JSON.parse((await run("tar", ["-xOf", p("img.docker.tar"), "manifest.json"])).stdout);
    expect(manifest).toHaveLength(1);
    expect(manifest[0].RepoTags).toEqual([`${reg.host}/out/app:v1`, `${reg.host}/out/app:stable`]);
    const repositories = JSON.parse((await run("tar", ["-xOf", p("img.docker.tar"), "repositories"])).stdout);
    expect(Object.keys(repositories[`${reg.host}/out/app`])).toEqual(["v1", "stable"]);
    // Each layer.tar is uncompressed and its sha256 is the config's DiffID.
    const cfg = JSON.parse((await run("tar", ["-xOf", p("img.docker.tar"), manifest[0].Config])).stdout);
    const first = (await run("sh", ["-c", `tar -xOf ${p("img.docker.tar")} ${manifest[0].Layers[0]} | sha256sum`])).stdout.split(" ")[0];
    expect(`sha256:${first}`).toBe(cfg.rootfs.diff_ids[0]);

    await run("skopeo", ["copy", `docker-archive:${p("img.docker.tar")}`, `oci:${p("from-docker")}:v1`]);
    await run("umoci", ["unpack", "--image", `${p("from-docker")}:v1`, p("bundle")]);
    expect(await readFile(p("bundle/rootfs/srv/hello.txt"), "utf8")).toBe("hello, outputs\n");
    expect(await readFile(p("bundle/rootfs/built.txt"), "utf8")).toBe("built\n");
    expect((await readdir(p("bundle/rootfs/bin"))).length).toBeGreaterThan(10);
  });

  it("oci-archive: skopeo sees the registry's digest; extracted, oci-image-tool validates it", async () => {
    const d = (await run("skopeo", ["inspect", "--format", "{{.Digest}}", `oci-archive:${p("img.oci.tar")}`])).stdout.trim();
    expect(d).toBe(registryDigest);
    const byTag = (await run("skopeo", ["inspect", "--format", "{{.Digest}}", `oci-archive:${p("img.oci.tar")}:v1`])).stdout.trim();
    expect(byTag).toBe(registryDigest);
    await mkdir(p("oci-extracted"));
    await run("tar", ["-xf", p("img.oci.tar"), "-C", p("oci-extracted")]);
    const { stdout, stderr } = await run("oci-image-tool", ["validate", "--type", "image", "--ref", "name=v1", p("oci-extracted")]);
    expect(`${stdout}${stderr}`).toMatch(/validation succeeded/i);
  });

  it("layout outputs (--output type=oci,tar=false and --oci-layout-path) validate and hold the registry's digest", async () => {
    for (const dir of ["layout", "kaniko-layout"]) {
      const { stdout, stderr } = await run("oci-image-tool", ["validate", "--type", "image", "--ref", "name=v1", p(dir)]);
      expect(`${stdout}${stderr}`).toMatch(/validation succeeded/i);
      const d = (await run("skopeo", ["inspect", "--format", "{{.Digest}}", `oci:${p(dir)}:v1`])).stdout.trim();
      expect(d).toBe(registryDigest);
    }
  });

  it("archives are reproducible: two --no-cache builds with one SOURCE_DATE_EPOCH give byte-identical archives", async () => {
    const sums: string[][] = [];
    for (const n of [1, 2]) {
      const r = await cli(
        ["--no-push", "--no-cache", "-t", "repro/app:v1", "--build-arg", `BASE=${reg.host}/base/busybox:latest`, "--cache-dir", p("cache"),
          "-o", `docker-archive:${p(`repro${n}.docker.tar`)}`, "-o", `oci-archive:${p(`repro${n}.oci.tar`)}`, p("ctx")],
        { env: { SOURCE_DATE_EPOCH: "1700000000" } },
      );
      expect(r.stderr).not.toMatch(/error\[/);
      expect(r.code).toBe(0);
      const h = async (f: string) => createHash("sha256").update(await readFile(p(f))).digest("hex");
      sums.push([await h(`repro${n}.docker.tar`), await h(`repro${n}.oci.tar`)]);
    }
    expect(sums[1]).toEqual(sums[0]);
  });

  it("a registry error names the code and carries the registry's message; exit 1", async () => {
    await mkdir(p("ctx-missing"));
    await writeFile(p("ctx-missing/Dockerfile"), `FROM ${reg.host}/no/such-image:v9\nRUN true\n`);
    const r = await cli(["--no-push", "--cache-dir", p("cache"), p("ctx-missing")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[REGISTRY_[A-Z_]+\]: .*no\/such-image.*\n/m);
    expect(r.stderr).toMatch(/MANIFEST_UNKNOWN|NAME_UNKNOWN/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("no temp files are left next to the outputs", async () => {
    const names = await readdir(work);
    expect(names.filter((n) => n.includes(".tmp-") || n.includes(".layers-") || n.includes("ocibuild-tmp"))).toEqual([]);
  });
});

describe("archive writing is atomic", () => {
  it("a failing entry leaves neither the archive nor a temp file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-tar-atomic-"));
    try {
      const target = join(dir, "out.tar");
      const entries = [
        fileEntry("a", 3, Buffer.from("abc")),
        fileEntry("b", 10, () => Readable.from([Buffer.from("short")])), // 5 bytes where 10 are declared
      ];
      await expect(writeTarFile(target, entries)).rejects.toMatchObject({ code: "LAYER_SIZE_MISMATCH" });
      expect(await readdir(dir)).toEqual([]);
      await writeTarFile(target, entries.slice(0, 1));
      const listing = (await run("tar", ["-tvf", target])).stdout;
      expect(listing).toMatch(/ a\n$/);
      const again = join(dir, "again.tar");
      await writeTarFile(again, entries.slice(0, 1));
      const h = async (f: string) => createHash("sha256").update(await readFile(f)).digest("hex");
      expect(await h(again)).toBe(await h(target));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a path under a regular file fails with OUTPUT_WRITE_FAILED naming it and ENOTDIR, not the temp file's clean-up error", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-tar-enotdir-"));
    try {
      await writeFile(join(dir, "file"), "x");
      const target = join(dir, "file", "out.tar");
      const err = await writeTarFile(target, [fileEntry("a", 3, Buffer.from("abc"))]).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "OUTPUT_WRITE_FAILED", message: `cannot write the archive ${target}: ENOTDIR (a part of the path is not a directory)`, file: target });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an aborted write leaves nothing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-tar-abort-"));
    try {
      const ac = new AbortController();
      const entries = (async function* () {
        yield fileEntry("a", 3, Buffer.from("abc"));
        ac.abort(new Error("stop"));
        yield fileEntry("b", 3, Buffer.from("def"));
      })();
      await expect(writeTarFile(join(dir, "x.tar"), entries, { signal: ac.signal })).rejects.toMatchObject({ code: "ABORTED" });
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
