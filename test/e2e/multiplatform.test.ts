/**
 * Multi-platform builds: a two-platform busybox base (amd64 and arm64 busybox-static
 * from Debian, built by ocibuild into an index in a real registry), RUN under qemu
 * for arm64, one OCI index pushed last, the cross-compilation pattern built once.
 */
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, type BuildResult } from "../../src/builder/build.js";
import { setupBinfmt, emulationStatus } from "../../src/builder/emulation.js";
import { ARM64_BUSYBOX, HOST_BUSYBOX, haveArm64Busybox, pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const CTX = resolve(__dirname, "../../testdata/multiplatform");
const ready = isRoot && process.arch === "x64" && haveRegistry() && have("bwrap") && have("skopeo") && have("umoci") && haveArm64Busybox() && have("qemu-aarch64-static");

describe.skipIf(!ready)("multi-platform build (needs root on amd64, bwrap, docker-registry, skopeo, umoci, qemu-user-static, arm64 busybox from scripts/setup.sh)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let result: BuildResult;
  const ref = () => `${reg.host}/test/multi:v1`;

  beforeAll(async () => {
    await setupBinfmt(["aarch64"]);
    const status = await emulationStatus({ os: "linux", architecture: "arm64" });
    if (!status.ok) throw new Error(`qemu-aarch64 could not be registered: ${status.reason}`);
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-multi-"));
    base = `${reg.host}/base/busybox:multi`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache"), busyboxes: { amd64: HOST_BUSYBOX, arm64: ARM64_BUSYBOX } });
    result = await build({ context: CTX, tags: [ref()], buildArgs: { BASE: base }, platform: "linux/amd64,linux/arm64", cacheDir: join(work, "cache") });
  }, 300_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("the base is a real two-platform index", async () => {
    const raw = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${base}`])).stdout);
    expect(raw.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(raw.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture).sort()).toEqual(["amd64", "arm64"]);
  });

  it("pushes an OCI index listing both platforms, under the tag, with the printed digest", async () => {
    const raw = JSON.parse((await run("skopeo", ["inspect", "--tls-verify=false", "--raw", `docker://${ref()}`])).stdout);
    expect(raw.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(raw.manifests.map((m: { platform: { os: string; architecture: string } }) => `${m.platform.os}/${m.platform.architecture}`)).toEqual(["linux/amd64", "linux/arm64"]);
    expect(result.digest).toBe(result.artifact.index!.digest);
    expect(result.references).toContain(`${ref()}@${result.digest}`);
  });

  it("unpacking the arm64 image gives aarch64 and arm64 in the files; the amd64 one x86_64 and amd64", async () => {
    for (const [arch, uname] of [["arm64", "aarch64"], ["amd64", "x86_64"]] as const) {
      const layout = join(work, `img-${arch}`);
      await run("skopeo", ["copy", "--src-tls-verify=false", "--override-arch", arch, `docker://${ref()}`, `oci:${layout}:v1`]);
      await run("umoci", ["unpack", "--image", `${layout}:v1`, join(work, `bundle-${arch}`)]);
      const root = join(work, `bundle-${arch}`, "rootfs");
      expect(await readFile(join(root, "arch"), "utf8")).toBe(`${uname}\n`);
      expect(await readFile(join(root, "targetarch"), "utf8")).toBe(`${arch}\n`);
      // The build stage ran natively, on the build platform, for both targets.
      expect(await readFile(join(root, "built-on"), "utf8")).toBe("built on x86_64\n");
    }
  });

  it("the build stage ran once for two targets (same output in both images, one report entry per step)", async () => {
    const nonces = [];
    for (const arch of ["arm64", "amd64"]) nonces.push(await readFile(join(work, `bundle-${arch}`, "rootfs", "build-nonce"), "utf8"));
    expect(nonces[0]).toBe(nonces[1]);
    // The build stage's FROM (its base a step of its own since issue 19) and its RUN, once each.
    const buildSteps = result.steps.filter((s) => s.stage === "build");
    expect(buildSteps.map((s) => s.instruction.split(" ")[0])).toEqual(["FROM", "RUN"]);
    expect(buildSteps.map((s) => s.platform)).toEqual(["linux/amd64", "linux/amd64"]);
    const finalRuns = result.steps.filter((s) => s.stage === "1" && s.instruction.startsWith("RUN"));
    expect(finalRuns.map((s) => s.platform).sort()).toEqual(["linux/amd64", "linux/arm64"]);
  });

  it("an OCI layout output holds the index; docker-archive refuses two platforms clearly", async () => {
    const out = join(work, "layout");
    const r = await cli(["--no-push", "--platform", "linux/amd64,linux/arm64", "--build-arg", `BASE=${base}`, "--output", `oci:${out}:v1`, "--cache-dir", join(work, "cache"), CTX]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    // Each platform's steps are labelled; the arm64 RUN is marked as emulated, the amd64 one is not.
    expect(r.stderr).toMatch(/\[1 linux\/arm64 \d\/\d\] RUN uname -m .*\(emulated\)/);
    expect(r.stderr).toMatch(/\[1 linux\/amd64 \d\/\d\] RUN uname -m [^\n]*\n/);
    expect(r.stderr).not.toMatch(/\[1 linux\/amd64 \d\/\d\] RUN uname -m [^\n]*\(emulated\)/);
    const index = JSON.parse(await readFile(join(out, "index.json"), "utf8"));
    expect(index.manifests[0].mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(index.manifests[0].digest).toBe(result.digest);
    const bad = await cli(["--no-push", "--platform", "linux/amd64,linux/arm64", "--build-arg", `BASE=${base}`, "--output", `docker-archive:${join(work, "x.tar")}`, "--cache-dir", join(work, "cache"), CTX]);
    expect(bad.code).not.toBe(0);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/docker-archive output holds one platform, but 2 were asked for \(linux\/amd64, linux\/arm64\)/);
    // Refused before anything was built.
    expect(bad.stderr).not.toMatch(/\[1 1\/4\]/);
  });

  it("a base without the requested platform fails listing the platforms it has", async () => {
    const ctx = join(work, "missing");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN true\n`);
    const r = await cli(["--no-push", "--platform", "linux/s390x", "--cache-dir", join(work, "cache"), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/linux\/s390x/);
    expect(r.stderr).toMatch(/linux\/amd64/);
    expect(r.stderr).toMatch(/linux\/arm64/);
  });
});
