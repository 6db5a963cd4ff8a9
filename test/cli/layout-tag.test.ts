/**
 * kaniko's --oci-layout-path writes a layout umoci and skopeo open by tag: the
 * manifest is named by the first -t's tag, "latest" when it has none or when there
 * is no -t (kaniko itself leaves the layout untagged, and `umoci unpack --image
 * DIR` cannot open that). Builds FROM scratch (no RUN); read back by umoci.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, have, isRoot, run } from "../helpers/tools.js";

let work: string;
const p = (...names: string[]) => join(work, ...names);
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-layout-tag-"));
  await writeFile(p("hello.txt"), "hello, layout\n");
  await writeFile(p("Dockerfile"), "FROM scratch\nCOPY hello.txt /srv/hello.txt\n");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe.skipIf(!isRoot || !have("umoci"))("--oci-layout-path is tagged (needs root and umoci)", () => {
  it.each([
    ["no -t: latest", [], "latest"],
    ["-t without a tag: latest", ["-t", "reg.lan/app"], "latest"],
    ["-t with a tag: that tag", ["-t", "reg.lan/app:v3"], "v3"],
  ])("%s", async (name, tagArgs, tag) => {
    const dir = p(`layout-${tag}-${tagArgs.length}`);
    const r = await cli(["--no-push", ...tagArgs, "--cache-dir", p("cache"), "--oci-layout-path", dir, work]);
    expect(r.stderr, name).not.toMatch(/error\[/);
    const bundle = `${dir}-bundle`;
    await run("umoci", ["unpack", "--image", `${dir}:${tag}`, bundle]);
    expect(await readFile(join(bundle, "rootfs", "srv", "hello.txt"), "utf8")).toBe("hello, layout\n");
  });
});
