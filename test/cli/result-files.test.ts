/**
 * The files a build writes after it is done: --iidfile holds Docker's image ID
 * (the config digest) for one platform and the index digest for several, as
 * buildx writes it; --metadata-file has containerimage.config.digest as buildx's
 * does. Builds FROM scratch (no RUN) into an OCI layout, read back from the layout.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli } from "../helpers/tools.js";

let work: string;
const p = (...names: string[]) => join(work, ...names);
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-result-files-"));
  await writeFile(p("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const blob = async (layout: string, d: string) => JSON.parse(await readFile(join(layout, "blobs", "sha256", d.slice(7)), "utf8"));

describe("--iidfile and --metadata-file", () => {
  it("one platform: --iidfile is the config digest (docker's image ID); the metadata has containerimage.config.digest", async () => {
    const r = await cli(["--no-push", "--cache-dir", p("cache"), "-o", `oci:${p("one")}`, "--iidfile", p("one.iid"), "--metadata-file", p("one.json"), "--digest-file", p("one.digest"), work]);
    expect(r.stderr).not.toMatch(/error\[/);
    const manifestDigest: string = JSON.parse(await readFile(p("one", "index.json"), "utf8")).manifests[0].digest;
    const configDigest: string = (await blob(p("one"), manifestDigest)).config.digest;
    expect(configDigest).not.toBe(manifestDigest);
    expect(await readFile(p("one.iid"), "utf8")).toBe(configDigest);
    expect(await readFile(p("one.digest"), "utf8")).toBe(manifestDigest);
    const meta = JSON.parse(await readFile(p("one.json"), "utf8"));
    expect(meta["containerimage.digest"]).toBe(manifestDigest);
    expect(meta["containerimage.config.digest"]).toBe(configDigest);
  });

  it("several platforms: --iidfile is the index digest, and there is no single config digest", async () => {
    const r = await cli([
      "--no-push", "--platform", "linux/amd64,linux/arm64", "--cache-dir", p("cache"), "-o", `oci:${p("multi")}`, "--iidfile", p("multi.iid"), "--metadata-file", p("multi.json"), work,
    ]);
    expect(r.stderr).not.toMatch(/error\[/);
    const indexDigest: string = JSON.parse(await readFile(p("multi", "index.json"), "utf8")).manifests[0].digest;
    expect((await blob(p("multi"), indexDigest)).manifests).toHaveLength(2);
    expect(await readFile(p("multi.iid"), "utf8")).toBe(indexDigest);
    const meta = JSON.parse(await readFile(p("multi.json"), "utf8"));
    expect(meta["containerimage.digest"]).toBe(indexDigest);
    expect(meta).not.toHaveProperty("containerimage.config.digest");
  });
});
