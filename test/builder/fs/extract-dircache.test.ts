/**
 * extractLayer remembers directories it has already checked within one layer. These
 * layers replace such a directory later in the same layer (by a symlink, a file or
 * a whiteout) and then write below it: the replacement must be seen every time.
 */
import { lstat, readFile, readdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../../src/errors.js";
import { extractLayer } from "../../../src/builder/fs/extract.js";
import { makeTar, streamOf, type TarSpec, makeCanaryRoot } from "../../../testdata/builder/fixtures.js";

let base: string;
let root: string;
let outside: string;

beforeEach(async () => {
  ({ base, root, outside } = await makeCanaryRoot("ocibuild-dircache-"));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function extract(specs: TarSpec[], whiteouts: "apply" | "overlay" = "apply"): Promise<void> {
  await extractLayer(root, streamOf(await makeTar(specs, true)), { whiteouts });
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  if (e === undefined) return "NO ERROR";
  expect(e).toBeInstanceOf(OcibuildError);
  return (e as OcibuildError).code;
}

async function expectOutsideUntouched(): Promise<void> {
  expect(await readdir(outside)).toEqual(["canary"]);
  expect(await readFile(join(outside, "canary"), "utf8")).toBe("safe");
}

describe("extractLayer: directories replaced later in the same layer", () => {
  it("a used directory replaced by an escaping symlink cannot be written through", async () => {
    const code = await codeOf(
      extract([
        { name: "a/", type: "directory" },
        { name: "a/b/", type: "directory" },
        { name: "a/b/x", content: "1" },
        { name: "a", type: "symlink", linkname: "../outside" },
        { name: "a/y", content: "pwned" },
      ]),
    );
    expect(code).toBe("ROOTFS_UNSAFE_PATH");
    await expectOutsideUntouched();
  });

  it("a used directory replaced by an in-root symlink: later entries land at the target, the old directory's metadata is not applied there", async () => {
    await extract([
      { name: "real/", type: "directory", mode: 0o751 },
      { name: "a/", type: "directory", mode: 0o700 },
      { name: "a/x", content: "old" },
      { name: "a", type: "symlink", linkname: "real" },
      { name: "a/y", content: "new" },
    ]);
    expect((await lstat(join(root, "a"))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(root, "real", "y"), "utf8")).toBe("new");
    expect(await readdir(join(root, "real"))).toEqual(["y"]);
    expect((await stat(join(root, "real"))).mode & 0o7777).toBe(0o751);
  });

  it("a used directory replaced by a file makes a later child a coded error", async () => {
    const code = await codeOf(
      extract([
        { name: "a/", type: "directory" },
        { name: "a/b/", type: "directory" },
        { name: "a", content: "now a file" },
        { name: "a/b/c", content: "x" },
      ]),
    );
    expect(code).toBe("ROOTFS_NOT_A_DIRECTORY");
  });

  it("a directory removed by an opaque marker is made again for a later child", async () => {
    await extract([{ name: "d/", type: "directory" }, { name: "d/sub/", type: "directory" }, { name: "d/sub/old", content: "o" }]);
    await extract([
      { name: "d/keep", content: "k" },
      { name: "d/.wh..wh..opq" },
      { name: "d/sub/new", content: "n" },
    ]);
    expect((await readdir(join(root, "d"))).sort()).toEqual(["keep", "sub"]);
    expect(await readdir(join(root, "d", "sub"))).toEqual(["new"]);
  });

  it("a directory whited out in apply form, then used again, is a fresh directory", async () => {
    await extract([{ name: "w/", type: "directory" }, { name: "w/old", content: "o" }]);
    await extract([{ name: ".wh.w" }, { name: "w/new", content: "n" }]);
    expect(await readdir(join(root, "w"))).toEqual(["new"]);
  });
});
