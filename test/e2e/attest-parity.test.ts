/**
 * ocibuild's attestations laid out as BuildKit lays them out: the same Dockerfile
 * built by a real BuildKit (buildctl with attest:provenance, where
 * the project's hand-built peer is installed) and by ocibuild, both into OCI
 * archives, and the two indexes compared: where the attestation manifest sits,
 * its platform, annotations, media types, and each layer's predicate type. Skips,
 * saying why, where buildkitd or buildctl is missing.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SLSA_V02, SLSA_V1, type ProvenanceVersion } from "../../src/attest/provenance.js";
import { build } from "../../src/builder/build.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { buildkitdMissing, startBuildkitd, type TestBuildkitd } from "../helpers/buildkitd.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const peerMissing = !isRoot || !haveRegistry() || !have("bwrap") ? "needs root, bwrap and docker-registry" : (buildkitdMissing() ?? (have("buildctl") ? undefined : "buildctl is not installed"));

interface Entry {
  mediaType: string;
  digest: string;
  platform?: { os: string; architecture: string };
  annotations?: Record<string, string>;
}

/** What must match: each index entry's shape, and each attestation manifest's layers (media type and predicate type). */
async function shapeOf(layout: string): Promise<unknown> {
  const blob = async (d: string) => JSON.parse(await readFile(join(layout, "blobs", "sha256", d.slice(7)), "utf8"));
  const top = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as { manifests: Entry[] };
  const index = (await blob(top.manifests[0]!.digest)) as { mediaType: string; manifests: Entry[] };
  const entries = [];
  for (const e of index.manifests) {
    const isAtt = e.annotations?.["vnd.docker.reference.type"] === "attestation-manifest";
    const m = (await blob(e.digest)) as { mediaType: string; config: { mediaType: string }; layers: { mediaType: string; annotations?: Record<string, string> }[] };
    entries.push({
      mediaType: e.mediaType,
      platform: isAtt ? e.platform : "image",
      annotationKeys: Object.keys(e.annotations ?? {}).sort(),
      refersToImage: isAtt ? index.manifests.some((x) => x.digest === e.annotations!["vnd.docker.reference.digest"]) : undefined,
      manifest: isAtt ? { mediaType: m.mediaType, config: m.config.mediaType, layers: m.layers.map((l) => [l.mediaType, l.annotations?.["in-toto.io/predicate-type"]]).sort() } : undefined,
    });
  }
  return { mediaType: index.mediaType, entries };
}

/**
 * The SLSA provenance version to compare in: BuildKit writes v1 since v0.23
 * (frontend/attestations: the provenance "version" attribute; v0.2 stays its
 * default until v0.28) and only v0.2 before, so an older daemon (the project's
 * peer is v0.11.6) is compared in v0.2 and a newer one in v1.
 */
async function slsaVersion(): Promise<ProvenanceVersion> {
  // The daemon startBuildkitd runs is the buildkitd on PATH.
  const { stdout } = await pexec("buildkitd", ["--version"]);
  const m = /\bv(\d+)\.(\d+)\.\d+/.exec(stdout);
  if (!m) throw new Error(`cannot tell BuildKit's version from: ${stdout}`);
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 0 || minor >= 23 ? "v1" : "v0.2";
}

describe.skipIf(peerMissing !== undefined)(`attestations compared with a real BuildKit's (${peerMissing ?? "needs buildkitd, buildctl, runc"})`, () => {
  let reg: TestRegistry;
  let bk: TestBuildkitd;
  let work: string;
  let base: string;
  let ctx: string;

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-attest-parity-"));
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    bk = await startBuildkitd({ insecureRegistries: [reg.host] });
    ctx = join(work, "ctx");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nRUN echo hi > /hi\n");
  }, 180_000);
  afterAll(async () => {
    await bk?.stop();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  for (const [name, mode] of [
    ["provenance", "min"],
    // BuildKit's SBOM needs its scanner image from Docker Hub, which tests never reach: provenance only.
    ["provenance, max mode", "max"],
  ] as const) {
    it(`${name}: the index and attestation manifest have BuildKit's layout`, async () => {
      // Like with like: the newest SLSA version this daemon writes, asked of both builders.
      const version = await slsaVersion();
      const theirs = join(work, `bk-${name.replace(/\W+/g, "-")}`);
      await mkdir(theirs, { recursive: true });
      const opt = `attest:provenance=mode=${mode}${version === "v1" ? ",version=v1" : ""}`;
      await pexec("buildctl", ["--addr", bk.address, "build", "--frontend", "dockerfile.v0", "--local", `context=${ctx}`, "--local", `dockerfile=${ctx}`, "--opt", `build-arg:BASE=${base}`, "--opt", opt, "--output", `type=oci,dest=${theirs}.tar`]);
      await run("tar", ["-xf", `${theirs}.tar`, "-C", theirs]);
      const ours = join(work, `ours-${name.replace(/\W+/g, "-")}`);
      await build({ context: ctx, buildArgs: { BASE: base }, cacheDir: join(work, "cache"), push: false, attest: { provenance: { mode, version } }, outputs: [{ type: "oci", dest: ours, tag: "v1" }] });
      const expected = await shapeOf(theirs);
      expect(JSON.stringify(expected)).toContain(version === "v1" ? SLSA_V1 : SLSA_V02);
      expect(await shapeOf(ours)).toEqual(expected);
    }, 180_000);
  }
});
