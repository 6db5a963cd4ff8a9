/**
 * zstd through bin/ocibuild, the bundle users run: the native encoder and fzstd are
 * loaded on first use from inside the bundle's vm.Script (where a dynamic import()
 * of a package fails), a zstd layer is written, and a docker archive output
 * decompresses it again.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { have } from "../helpers/tools.js";

const root = resolve(import.meta.dirname, "../..");
const exec = promisify(execFile);

let work: string;
beforeAll(async () => {
  if (!existsSync(join(root, "dist/ocibuild.cjs"))) throw new Error("dist/ocibuild.cjs is missing: run `npm run build`");
  work = await mkdtemp(join(tmpdir(), "ocibuild-bin-zstd-"));
  await mkdir(join(work, "ctx"));
  await writeFile(join(work, "ctx/Dockerfile"), "FROM scratch\nCOPY f.txt /f.txt\n");
  await writeFile(join(work, "ctx/f.txt"), "written by the bundle\n".repeat(100));
});
afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe.skipIf(!have("tar"))("bin/ocibuild --compression zstd", () => {
  it("writes a tar+zstd layer and a docker archive holding its tar", async () => {
    const layout = join(work, "out");
    const archive = join(work, "img.tar");
    const args = [join(root, "bin/ocibuild.cjs"), "--cache-dir", join(work, "cache"), "--compression", "zstd", "-q", "-o", `oci:${layout}:v1`, "-o", `docker-archive:${archive}`, join(work, "ctx")];
    const r = await exec(process.execPath, args, { env: { ...process.env, NO_COLOR: "1" } });
    expect(r.stdout.trim()).toMatch(/^sha256:[a-f0-9]{64}$/);
    const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as { manifests: { digest: string }[] };
    const blob = (d: string) => join(layout, "blobs/sha256", d.slice("sha256:".length));
    const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), "utf8")) as { config: { digest: string }; layers: { mediaType: string }[] };
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(["application/vnd.oci.image.layer.v1.tar+zstd"]);
    const config = JSON.parse(await readFile(blob(manifest.config.digest), "utf8")) as { rootfs: { diff_ids: string[] } };
    const x = join(work, "x");
    await mkdir(x);
    await exec("tar", ["-xf", archive, "-C", x]);
    const entry = JSON.parse(await readFile(join(x, "manifest.json"), "utf8")) as { Layers: string[] }[];
    const tar = await readFile(join(x, entry[0]!.Layers[0]!));
    expect(`sha256:${createHash("sha256").update(tar).digest("hex")}`).toBe(config.rootfs.diff_ids[0]);
  }, 120_000);
});
