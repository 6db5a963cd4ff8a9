/**
 * .dockerignore through symlinks: BuildKit never sends an ignored file, so in its
 * context a link to one dangles. A COPY, a wildcard, a directory copy through a link
 * and a RUN bind mount must not read ignored content by way of a link to it.
 */
import { mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { isOcibuildError } from "../../src/errors.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci");
const SECRET = "ignored-secret-5b1e";

describe.skipIf(!ready)(".dockerignore applies to what a symlink in the context resolves to (needs root, bwrap, docker-registry, umoci)", () => {
  const fx = useBusyboxRegistry("e2e-ignore-links");
  let work: string;
  let base: string;
  let n = 0;

  beforeAll(() => {
    ({ work, base } = fx);
  });

  /** A context with an ignored file and directory, links to both, and one file that is kept. */
  async function context(dockerfile: string): Promise<string> {
    const dir = join(work, `ctx-${++n}`);
    await mkdir(join(dir, "secretdir"), { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    await writeFile(join(dir, ".dockerignore"), "secret.env\nsecretdir\n");
    await writeFile(join(dir, "secret.env"), `${SECRET}\n`);
    await writeFile(join(dir, "secretdir", "inner"), `${SECRET}\n`);
    await writeFile(join(dir, "ok.txt"), "ok\n");
    await symlink("secret.env", join(dir, "alias"));
    await symlink("secretdir", join(dir, "pdir"));
    return dir;
  }

  async function buildIt(dockerfile: string): Promise<{ error?: unknown; root?: string }> {
    const ctx = await context(dockerfile);
    const dest = join(work, `img-${n}`);
    try {
      await build({ context: ctx, buildArgs: { BASE: base }, cacheDir: join(work, "cache"), outputs: [{ type: "oci", dest, tag: "v1" }] });
    } catch (error) {
      return { error };
    }
    await run("umoci", ["unpack", "--image", `${dest}:v1`, join(work, `bundle-${n}`)]);
    return { root: join(work, `bundle-${n}`, "rootfs") };
  }

  /** Every regular file's content under root, concatenated: the secret must be in none. */
  async function allContent(root: string): Promise<string> {
    let out = "";
    for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
      if (e.isFile()) out += await readFile(join(e.parentPath, e.name), "utf8").catch(() => "");
    }
    return out;
  }

  for (const [what, line] of [
    ["COPY of a link to an ignored file", "COPY alias /a"],
    ["a wildcard that matches only a link to an ignored file", "COPY ali* /w/"],
    ["COPY of a link to an ignored directory", "COPY pdir/ /p/"],
    ["COPY of a file below a link to an ignored directory", "COPY pdir/inner /i"],
    ["a RUN bind mount of a link to an ignored file", "RUN --mount=type=bind,source=alias,target=/m cat /m > /leak"],
  ] as const) {
    it(`${what} finds nothing: the build fails as for a missing source, and no layer holds the content`, async () => {
      const r = await buildIt(`ARG BASE\nFROM \${BASE}\n${line}\n`);
      expect(r.error, "the build must fail").toBeDefined();
      expect(isOcibuildError(r.error) ? r.error.code : String(r.error)).toMatch(/NOT_FOUND/);
      expect(String((r.error as Error).message)).not.toContain(SECRET);
    });
  }

  it("COPY . copies the links as links, and nothing ignored", async () => {
    const r = await buildIt("ARG BASE\nFROM ${BASE}\nCOPY . /all/\n");
    expect(r.error).toBeUndefined();
    const root = r.root!;
    expect(await readFile(join(root, "all/ok.txt"), "utf8")).toBe("ok\n");
    expect((await readdir(join(root, "all"))).sort()).toEqual([".dockerignore", "Dockerfile", "alias", "ok.txt", "pdir"]);
    expect(await allContent(root)).not.toContain(SECRET);
  });
});
