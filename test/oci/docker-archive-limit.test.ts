/**
 * A docker archive holds layers uncompressed, so writing one decompresses every
 * base layer: maxLayerSize bounds that as it bounds extraction.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeDockerArchive } from "../../src/oci/docker-archive.js";
import type { Image } from "../../src/oci/image.js";
import { imageOf, imageValue } from "./registry/images.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "ocibuild-docker-archive-limit-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function bombImage(): Promise<Image> {
  return imageValue(await imageOf("amd64", { zeros: new Uint8Array(32 * 1024 * 1024) }));
}

describe("writeDockerArchive with maxLayerSize", () => {
  it("fails with LAYER_TOO_LARGE naming the layer, leaving no archive and no temp files", async () => {
    const img = await bombImage();
    const path = join(work, "bomb.tar");
    await expect(writeDockerArchive(path, img, { repoTags: ["bomb:v1"], maxLayerSize: 4 * 1024 * 1024 })).rejects.toMatchObject({
      code: "LAYER_TOO_LARGE",
      message: expect.stringContaining(img.blobs[1]!.descriptor.digest),
    });
    expect(existsSync(path)).toBe(false);
    expect(await readdir(work)).toEqual([]);
  });

  it("writes the archive when the layer fits", async () => {
    const path = join(work, "fits.tar");
    await writeDockerArchive(path, await bombImage(), { repoTags: ["bomb:v1"], maxLayerSize: 33 * 1024 * 1024 });
    expect(existsSync(path)).toBe(true);
    await rm(path);
  });
});
