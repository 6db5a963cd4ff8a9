/**
 * zstd layers end to end, against a real registry and real readers: a base whose
 * layers skopeo re-compressed as zstd is pulled and built on (RUN on it); a
 * `compression: "zstd"` build is read back by skopeo (media types, and its zstd
 * decoder) and unpacked by umoci (content); the same build twice gives the same zstd layers; force-compression
 * turns the base's layers into zstd too; a build switching compression over a warm
 * cache re-compresses the cached layers instead of running the steps, and gets the
 * image a fresh build of that compression gets; a docker archive and `ocibuild run`
 * read zstd layers.
 */
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build, type BuildOptions } from "../../src/builder/build.js";
import { MediaType } from "../../src/oci/media-types.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("skopeo") && have("umoci") && have("zstd");
const GZIP = MediaType.OCI_LAYER_GZIP;
const ZSTD = MediaType.OCI_LAYER_ZSTD;
/**
 * Debian's umoci (0.4.7) refuses tar+zstd by media type, so skopeo copies to the
 * layout as gzip: it decompresses our zstd with Go's decoder (klauspost/compress, as
 * containerd), and umoci then checks every file against the DiffIDs.
 */
const TO_GZIP = ["--dest-compress-format", "gzip"];

interface RawManifest {
  layers: { mediaType: string; digest: string }[];
}

describe.skipIf(!ready)("zstd layers end to end (needs root for RUN, docker-registry, skopeo, umoci, zstd)", () => {
  const f = useBusyboxRegistry("zstd");
  const inspect = async (ref: string): Promise<RawManifest> => JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref}`])).stdout) as RawManifest;
  const zstdBase = () => `${f.reg.host}/base/busybox-zstd:latest`;

  async function context(name: string, dockerfile: string): Promise<string> {
    const dir = join(f.work, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    await writeFile(join(dir, "notes.txt"), "zstd layers\n".repeat(2000));
    return dir;
  }

  const opts = (ctx: string, cacheDir: string, more: Partial<BuildOptions> = {}): BuildOptions => ({ context: ctx, cacheDir, platform: "linux/amd64", sourceDateEpoch: 1_700_000_000, ...more });

  // The zstd base: the busybox base copied by skopeo, which re-compresses its layers with Go's zstd.
  beforeAll(async () => {
    await run("skopeo", ["copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--dest-compress-format", "zstd", `docker://${f.base}`, `docker://${zstdBase()}`]);
  }, 60_000);

  it("pulls a base whose layers skopeo re-compressed as zstd and runs on it", async () => {
    const base = await inspect(zstdBase());
    expect(base.layers.map((l) => l.mediaType)).toEqual(base.layers.map(() => ZSTD));
    const ctx = await context("on-zstd", `FROM ${zstdBase()}\nRUN echo built on zstd > /on-zstd && cat /bin/busybox > /dev/null\n`);
    const ref = `${f.reg.host}/app/on-zstd:v1`;
    await build(opts(ctx, join(f.work, "cache-on-zstd"), { tags: [ref] }));
    const m = await inspect(ref);
    // The base's layers keep their compression (no force-compression); the new one is gzip, the default.
    expect(m.layers.map((l) => l.mediaType)).toEqual([...base.layers.map(() => ZSTD), GZIP]);
    expect(m.layers.slice(0, -1).map((l) => l.digest)).toEqual(base.layers.map((l) => l.digest));
    const r = await cli(["run", "--cache-dir", join(f.work, "cache-run"), ref, "cat", "/on-zstd"]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.stdout).toBe("built on zstd\n");
  }, 180_000);

  let zstdRef = "";
  const zstdFile = `FROM ${"BASE"}\nCOPY notes.txt /srv/notes.txt\nRUN echo hello zstd > /srv/hello && ln -s hello /srv/link\n`;

  it("writes zstd layers that skopeo reads and umoci unpacks", async () => {
    const ctx = await context("made", zstdFile.replace("BASE", f.base));
    zstdRef = `${f.reg.host}/app/made:zstd`;
    const r = await build(opts(ctx, join(f.work, "cache-made"), { tags: [zstdRef], compression: "zstd" }));
    expect(r.digest).toMatch(/^sha256:/);
    const m = await inspect(zstdRef);
    expect(m.layers.map((l) => l.mediaType)).toEqual([GZIP, ZSTD, ZSTD]);
    const layout = join(f.work, "made-layout");
    await run("skopeo", ["copy", "--src-tls-verify=false", ...TO_GZIP, `docker://${zstdRef}`, `oci:${layout}:v1`]);
    const bundle = join(f.work, "made-bundle");
    await run("umoci", ["unpack", "--image", `${layout}:v1`, bundle]);
    expect(await readFile(join(bundle, "rootfs/srv/notes.txt"), "utf8")).toBe("zstd layers\n".repeat(2000));
    expect(await readFile(join(bundle, "rootfs/srv/hello"), "utf8")).toBe("hello zstd\n");
    expect((await readdir(join(bundle, "rootfs/bin"))).length).toBeGreaterThan(10);
  }, 180_000);

  it("the same build twice, from fresh caches, gives the same zstd layers", async () => {
    const ctx = await context("again", zstdFile.replace("BASE", f.base));
    const a = await build(opts(ctx, join(f.work, "cache-again-a"), { compression: "zstd" }));
    const b = await build(opts(ctx, join(f.work, "cache-again-b"), { compression: "zstd" }));
    const layers = (x: typeof a) => x.image.manifest.parsed.layers.map((l) => `${l.mediaType} ${l.digest}`);
    expect(layers(b)).toEqual(layers(a));
    expect(b.digest).toBe(a.digest);
  }, 180_000);

  it("force-compression re-compresses the base's layers too", async () => {
    const ctx = await context("forced", zstdFile.replace("BASE", f.base));
    const ref = `${f.reg.host}/app/forced:v1`;
    await build(opts(ctx, join(f.work, "cache-forced"), { tags: [ref], compression: "zstd", forceCompression: true }));
    const m = await inspect(ref);
    expect(m.layers.map((l) => l.mediaType)).toEqual([ZSTD, ZSTD, ZSTD]);
    const layout = join(f.work, "forced-layout");
    await run("skopeo", ["copy", "--src-tls-verify=false", ...TO_GZIP, `docker://${ref}`, `oci:${layout}:v1`]);
    const bundle = join(f.work, "forced-bundle");
    await run("umoci", ["unpack", "--image", `${layout}:v1`, bundle]);
    expect(await readFile(join(bundle, "rootfs/srv/hello"), "utf8")).toBe("hello zstd\n");
    expect((await readdir(join(bundle, "rootfs/bin"))).length).toBeGreaterThan(10);
  }, 180_000);

  it("switching compression over a warm cache re-compresses the cached layers: steps cached, the fresh build's image", async () => {
    const ctx = await context("switch", zstdFile.replace("BASE", f.base));
    const cacheDir = join(f.work, "cache-switch");
    const gz = await build(opts(ctx, cacheDir));
    expect(gz.image.manifest.parsed.layers.map((l) => l.mediaType)).toEqual([GZIP, GZIP, GZIP]);
    const logs: string[] = [];
    const z = await build(opts(ctx, cacheDir, { compression: "zstd", onEvent: (e) => e.type === "log" && logs.push(e.message) }));
    expect(z.steps.filter((s) => s.instruction.startsWith("COPY") || s.instruction.startsWith("RUN")).map((s) => s.cached)).toEqual([true, true]);
    expect(z.image.manifest.parsed.layers.map((l) => l.mediaType)).toEqual([GZIP, ZSTD, ZSTD]);
    const fresh = await build(opts(ctx, join(f.work, "cache-switch-fresh"), { compression: "zstd" }));
    expect(z.digest).toBe(fresh.digest);
    expect(logs.filter((l) => /re-compressed as zstd/.test(l))).toHaveLength(2);
    // The conversion is recorded: the next zstd build converts nothing; back to gzip gives the gzip image again.
    const logs2: string[] = [];
    const z2 = await build(opts(ctx, cacheDir, { compression: "zstd", onEvent: (e) => e.type === "log" && logs2.push(e.message) }));
    expect(z2.digest).toBe(fresh.digest);
    expect(logs2.filter((l) => /re-compressed/.test(l))).toHaveLength(0);
    expect((await build(opts(ctx, cacheDir))).digest).toBe(gz.digest);
  }, 240_000);

  it("a docker archive of a zstd image holds each layer as the tar its DiffID names", async () => {
    const ctx = await context("archive", zstdFile.replace("BASE", zstdBase()));
    const dest = join(f.work, "zstd.docker.tar");
    const r = await build(opts(ctx, join(f.work, "cache-archive"), { compression: "zstd", outputs: [{ type: "docker-archive", dest }] }));
    expect(r.image.manifest.parsed.layers.every((l) => l.mediaType === ZSTD)).toBe(true);
    const out = join(f.work, "archive-x");
    await mkdir(out);
    await run("tar", ["-xf", dest, "-C", out]);
    const manifest = JSON.parse(await readFile(join(out, "manifest.json"), "utf8")) as { Layers: string[] }[];
    const hashes = await Promise.all(manifest[0]!.Layers.map(async (p) => `sha256:${createHash("sha256").update(await readFile(join(out, p))).digest("hex")}`));
    expect(hashes).toEqual(r.image.config.parsed.rootfs.diff_ids);
  }, 180_000);

  it("the CLI: kaniko's --compression zstd, and buildx's compression=zstd,force-compression=true on --output", async () => {
    const ctx = await context("cli", zstdFile.replace("BASE", f.base));
    const kaniko = `${f.reg.host}/app/cli:kaniko`;
    const a = await cli(["--cache-dir", join(f.work, "cache-cli"), "--compression", "zstd", "--compression-level", "9", "-t", kaniko, ctx]);
    expect(a.stderr).not.toMatch(/error/);
    expect((await inspect(kaniko)).layers.map((l) => l.mediaType)).toEqual([GZIP, ZSTD, ZSTD]);
    const buildx = `${f.reg.host}/app/cli:buildx`;
    const b = await cli(["--cache-dir", join(f.work, "cache-cli"), "-o", `type=registry,name=${buildx},compression=zstd,force-compression=true`, ctx]);
    expect(b.stderr).not.toMatch(/error/);
    expect((await inspect(buildx)).layers.map((l) => l.mediaType)).toEqual([ZSTD, ZSTD, ZSTD]);
  }, 180_000);

  it("a zstd base written out without extraction is checked against its DiffIDs; ocibuild copy passes zstd layers through", async () => {
    const ctx = await context("label", `FROM ${zstdBase()}\nLABEL only=metadata\n`);
    const out = join(f.work, "label-layout");
    const r = await build(opts(ctx, join(f.work, "cache-label"), { outputs: [{ type: "oci", dest: out, tag: "v1" }] }));
    const base = await inspect(zstdBase());
    expect(r.image.manifest.parsed.layers.map((l) => l.digest)).toEqual(base.layers.map((l) => l.digest));
    // The DiffID check decompressed the zstd layer on its way into the layout, and recorded it.
    const records = await readdir(join(f.work, "cache-label", "diffids"));
    expect(records).toEqual(base.layers.map((l) => l.digest.slice("sha256:".length)));
    const copied = join(f.work, "copied-layout");
    const c = await cli(["copy", zstdBase(), `oci:${copied}:v1`]);
    expect(c.stderr).not.toMatch(/error/);
    const raw = JSON.parse((await run("skopeo", ["inspect", "--raw", `oci:${copied}:v1`])).stdout) as RawManifest;
    expect(raw.layers).toEqual(base.layers);
  }, 180_000);
});
