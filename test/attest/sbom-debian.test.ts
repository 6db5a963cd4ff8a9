/**
 * The SBOM of a real Debian image built by ocibuild: the bookworm minbase
 * (mmdebstrap), a RUN that apt-get installs jq, COPY layers with npm and Python
 * packages and a real Go binary, and a RUN that deletes some of them (whiteouts
 * made by ocibuild's own snapshot). The SBOM, made from the OCI layout's layers,
 * must list exactly the packages dpkg-query lists inside the image (unpacked by
 * umoci), at the same versions, each related to the layer that added it.
 */
import { createReadStream, existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy } from "../../src/api.js";
import { generateSbom, type SbomLayer, type SbomResult } from "../../src/attest/sbom.js";
import { parseDebCopyright } from "../../src/attest/sbom-os.js";
import type { DiffID, Digest } from "../../src/oci/digest.js";
import { debianBaseMissing, debianLayout, debianRootfs } from "../../src/testing/debian.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const REPO = resolve(__dirname, "../..");
const GO_BINARY = "/usr/bin/umoci";
const missing = !isRoot
  ? "needs root"
  : !have("bwrap") || !haveRegistry() || !have("umoci")
    ? "needs bwrap, docker-registry and umoci (scripts/setup.sh installs them)"
    : debianBaseMissing();

let attachedDebs: string[] = [];

/** The Debian packages ("name version arch") of the SPDX statement in the attestation manifest of the layout's index. */
async function attachedSbomDebs(dir: string): Promise<string[]> {
  const blob = async (d: string) => JSON.parse(await readFile(join(dir, "blobs", "sha256", d.slice(7)), "utf8"));
  const top = (await blob((JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: { digest: string }[] }).manifests[0]!.digest)) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const att = top.manifests.find((m) => m.annotations?.["vnd.docker.reference.type"] === "attestation-manifest")!;
  const m = (await blob(att.digest)) as { layers: { digest: string; annotations: Record<string, string> }[] };
  const st = await blob(m.layers.find((l) => l.annotations["in-toto.io/predicate-type"] === "https://spdx.dev/Document")!.digest);
  const debs = (st.predicate.packages as { versionInfo?: string; externalRefs?: { referenceLocator: string }[] }[]).flatMap((p) => p.externalRefs ?? []).map((r) => r.referenceLocator).filter((l) => l.startsWith("pkg:deb/"));
  return debs.map((purl) => {
    const m2 = /^pkg:deb\/debian\/([^@]+)@([^?]+)\?arch=([^&]+)/.exec(purl)!;
    return `${decodeURIComponent(m2[1]!)} ${decodeURIComponent(m2[2]!)} ${m2[3]}`;
  });
}

/** The layers of the manifest tagged `tag` in an OCI layout, bottom first, read from its blobs. */
async function layoutLayers(dir: string, tag: string): Promise<SbomLayer[]> {
  const blob = (d: string) => join(dir, "blobs", ...d.split(":"));
  const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
  const desc = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag)!;
  const manifest = JSON.parse(await readFile(blob(desc.digest), "utf8")) as { config: { digest: string }; layers: Array<{ digest: string; mediaType: string }> };
  const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8")) as { rootfs: { diff_ids: string[] } };
  return manifest.layers.map((l, i) => ({
    diffId: config.rootfs.diff_ids[i] as DiffID,
    digest: l.digest as Digest,
    mediaType: l.mediaType,
    open: () => createReadStream(blob(l.digest)),
  }));
}

/** `dpkg-query -W` inside a root filesystem: "name version arch" of each package, with its state. */
async function dpkgQuery(rootfs: string): Promise<Array<{ pkg: string; state: string }>> {
  const { stdout } = await run("chroot", [rootfs, "dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture} ${db:Status-Status}\\n"]);
  return stdout.trim().split("\n").map((l) => {
    const [n, v, a, state] = l.split(" ");
    return { pkg: `${n} ${v} ${a}`, state: state! };
  });
}

describe.skipIf(missing !== undefined)(`the SBOM of a Debian image built by ocibuild (${missing ?? "needs root, bwrap, docker-registry, umoci, mmdebstrap"})`, () => {
  let reg: TestRegistry;
  let work: string;
  let layers: SbomLayer[];
  let sbom: SbomResult;
  let rootfs: string;
  const debs = () => sbom.packages.filter((p) => p.type === "deb");

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-sbom-debian-"));
    reg = await startRegistry();
    const base = await debianLayout(join(REPO, ".cache", "test-debian"));
    const debian = `${reg.host}/base/debian:bookworm`;
    await copy(`oci:${base.dir}:${base.ref}`, debian, {});
    const ctx = join(work, "ctx");
    await mkdir(join(ctx, "nm/left-pad"), { recursive: true });
    await mkdir(join(ctx, "nm/@acme/widget"), { recursive: true });
    await mkdir(join(ctx, "py/six-1.16.0.dist-info"), { recursive: true });
    await mkdir(join(ctx, "py/gone-1.0.dist-info"), { recursive: true });
    await writeFile(join(ctx, "nm/left-pad/package.json"), JSON.stringify({ name: "left-pad", version: "1.3.0", license: "WTFPL" }));
    await writeFile(join(ctx, "nm/@acme/widget/package.json"), JSON.stringify({ name: "@acme/widget", version: "2.1.0", license: "Apache-2.0" }));
    await writeFile(join(ctx, "py/six-1.16.0.dist-info/METADATA"), "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n");
    await writeFile(join(ctx, "py/gone-1.0.dist-info/METADATA"), "Metadata-Version: 2.1\nName: gone\nVersion: 1.0\n");
    await copyFile(GO_BINARY, join(ctx, "gobin"));
    await writeFile(
      join(ctx, "Dockerfile"),
      [
        `FROM ${debian}`,
        "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends jq >/dev/null && rm -rf /var/lib/apt/lists/*",
        "COPY nm/ /usr/lib/node_modules/",
        "COPY py/ /usr/lib/python3/dist-packages/",
        "COPY gobin /usr/local/bin/gobin",
        "RUN rm -rf /usr/lib/node_modules/left-pad /usr/lib/python3/dist-packages/gone-1.0.dist-info",
        "",
      ].join("\n"),
    );
    const out = join(work, "out");
    const b = await cli(["--no-push", "-o", `oci:${out}:app`, "--cache-dir", join(work, "cache"), ctx]);
    expect(b.code, b.stderr).toBe(0);
    layers = await layoutLayers(out, "app");
    sbom = await generateSbom(layers, { name: "sbom-test/app", sourceDateEpoch: 0 });
    await run("umoci", ["unpack", "--image", `${out}:app`, join(work, "bundle")]);
    // The same build again (every step cached) with --sbom: the SBOM the build attaches.
    const attested = join(work, "attested");
    const a = await cli(["--no-push", "--sbom=true", "-o", `oci:${attested}:app`, "--cache-dir", join(work, "cache"), ctx]);
    expect(a.code, a.stderr).toBe(0);
    attachedDebs = await attachedSbomDebs(attested);
    rootfs = join(work, "bundle", "rootfs");
  }, 900_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("--sbom attaches to the built image an SBOM that lists exactly the packages dpkg-query lists inside it", async () => {
    const inImage = await dpkgQuery(rootfs);
    expect(attachedDebs.sort()).toEqual(inImage.map((p) => p.pkg).sort());
  });

  it("lists exactly the packages dpkg-query lists inside the image, at the same versions", async () => {
    const inImage = await dpkgQuery(rootfs);
    expect(inImage.length).toBeGreaterThan(90);
    // Nothing is half-removed in this image, so dpkg-query's plain list is the installed one.
    expect(inImage.filter((p) => p.state !== "installed")).toEqual([]);
    expect(debs().map((p) => `${p.name} ${p.version} ${p.arch}`).sort()).toEqual(inImage.map((p) => p.pkg).sort());
    expect(debs().find((p) => p.name === "jq")!.purl).toMatch(/^pkg:deb\/debian\/jq@[^?]+\?arch=amd64&distro=debian-12$/);
  });

  it("relates the packages the RUN installed to that layer's DiffID, and the base's to the base layer", async () => {
    expect(layers).toHaveLength(6);
    const before = new Set((await dpkgQuery(await debianRootfs(join(REPO, ".cache", "test-debian")))).map((p) => p.pkg));
    const added = debs().filter((p) => !before.has(`${p.name} ${p.version} ${p.arch}`)).map((p) => p.name);
    expect(added).toEqual(expect.arrayContaining(["jq", "libjq1", "libonig5"]));
    expect(debs().filter((p) => p.layer === 1).map((p) => p.name)).toEqual(added);
    expect(debs().filter((p) => p.layer !== 1).every((p) => p.layer === 0)).toBe(true);
    const jq = sbom.document.packages.find((p) => p.name === "jq")!;
    expect(jq.annotations).toEqual([expect.objectContaining({ comment: `layerDiffID: ${layers[1]!.diffId}\nlayerID: ${layers[1]!.digest}` })]);
  });

  it("takes each package's licence from its DEP-5 copyright file, and asserts none where the file is free-form", async () => {
    let dep5 = 0;
    for (const p of debs()) {
      const file = join(rootfs, "usr/share/doc", p.name, "copyright");
      const declared = existsSync(file) ? parseDebCopyright(await readFile(file, "utf8")) : undefined;
      if (declared !== undefined) dep5++;
      expect([p.name, p.license]).toEqual([p.name, declared]);
    }
    expect(dep5).toBeGreaterThan(50);
  });

  it("drops what a later layer deleted and keeps the rest, each with its COPY layer", () => {
    const lang = sbom.packages.filter((p) => p.type === "npm" || p.type === "pypi").map((p) => `${p.purl} L${p.layer}`);
    expect(lang).toEqual(["pkg:npm/%40acme/widget@2.1.0 L2", "pkg:pypi/six@1.16.0 L3"]);
  });

  it("reads the Go binary's build info, related to the layer that copied it", () => {
    const go = sbom.packages.filter((p) => p.type === "golang");
    expect(go.map((p) => p.path)).toEqual(["/usr/local/bin/gobin", "/usr/local/bin/gobin"]);
    expect(go.every((p) => p.layer === 4)).toBe(true);
    expect(go.map((p) => p.purl)).toEqual([expect.stringMatching(/^pkg:golang\/github\.com\/opencontainers\/umoci\/cmd\/umoci$/), expect.stringMatching(/^pkg:golang\/stdlib@1\.\d+/)]);
  });
});
