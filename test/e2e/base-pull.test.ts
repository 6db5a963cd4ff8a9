/**
 * Base images resolved as docker does (issue 19's --pull): without --pull a tag this
 * cache directory resolved within the cache TTL is reused with no registry round trip
 * (so a cached build works with the registry down); with --pull every tag is resolved
 * in its registry again. A digest-pinned base is never asked for again; another
 * platform or mirror setting does not share a resolution.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, type BuildOptions, type BuildResult } from "../../src/api.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot } from "../helpers/tools.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";

const ready = isRoot && haveRegistry() && have("bwrap");

const APP = "ARG BASE\nFROM ${BASE}\nRUN echo built > /built\n";

/** How many layers the built image's base contributed (the app adds one). */
const baseLayers = (r: BuildResult) => r.image.manifest.parsed.layers.length - 1;

describe.skipIf(!ready)("base images: --pull, resolution records, offline (needs root, bwrap, docker-registry)", () => {
  const f = useBusyboxRegistry("base-pull");
  let app: string;
  const opts = (base: string, cacheDir: string, extra: Partial<BuildOptions> = {}): BuildOptions => ({ context: app, push: false, cacheDir, buildArgs: { BASE: base }, ...extra });

  beforeAll(async () => {
    app = join(f.work, "app");
    await mkdir(app, { recursive: true });
    await writeFile(join(app, "Dockerfile"), APP);
  });

  it("a re-pushed tag: reused without --pull, picked up with --pull", async () => {
    const tag = `${f.reg.host}/base/moving:v1`;
    await pushBusyboxBase({ reference: tag, workDir: join(f.work, "v1"), cacheDir: join(f.work, "v1-cache") });
    const cacheDir = join(f.work, "moving-cache");
    expect(baseLayers(await build(opts(tag, cacheDir)))).toBe(1);
    // The same tag now names another image: v1 plus a layer.
    const v2 = join(f.work, "v2");
    await mkdir(v2, { recursive: true });
    await writeFile(join(v2, "Dockerfile"), `FROM ${tag}\nRUN echo v2 > /version\n`);
    await build({ context: v2, tags: [tag], cacheDir: join(f.work, "v2-cache") });

    expect(baseLayers(await build(opts(tag, cacheDir)))).toBe(1);
    expect(baseLayers(await build(opts(tag, cacheDir, { pull: true })))).toBe(2);
    // --pull rewrote the record: the next build without it has the new base too.
    expect(baseLayers(await build(opts(tag, cacheDir)))).toBe(2);
    // So does a build whose record is older than the TTL.
    const other = join(f.work, "moving-ttl");
    await build(opts(tag, other));
    expect(baseLayers(await build(opts(tag, other, { cacheTtlSeconds: 0 })))).toBe(2);
  }, 180_000);

  it("--pull on the command line", async () => {
    const r = await cli(["build", "--pull", "--no-push", "--progress", "plain", "--cache-dir", join(f.work, "cli-cache"), "--build-arg", `BASE=${f.base}`, app]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
  }, 120_000);

  describe("with the registry stopped", () => {
    let reg: TestRegistry;
    let base: string;
    let pinned: string;
    const cacheDir = () => join(f.work, "offline-cache");
    const offline = (ref: string, extra: Partial<BuildOptions> = {}) => build(opts(ref, cacheDir(), { registry: { retry: { attempts: 1 } }, ...extra }));

    beforeAll(async () => {
      reg = await startRegistry();
      base = `${reg.host}/base/busybox:latest`;
      const pushed = await pushBusyboxBase({ reference: base, workDir: join(f.work, "offline-base"), cacheDir: join(f.work, "offline-base-cache") });
      pinned = `${reg.host}/base/busybox@${pushed.digest}`;
      // Built while the registry is up: the base resolved and recorded, its layers pulled for the RUN.
      await build(opts(base, cacheDir()));
      await build(opts(pinned, cacheDir()));
      await reg.stop();
    }, 180_000);
    afterAll(async () => {
      await reg?.stop();
    });

    it("a cached build still resolves its base, from the record", async () => {
      const r = await offline(base);
      expect(baseLayers(r)).toBe(1);
    });

    it("--pull, a record past the TTL, another mirror setting or platform: the registry is asked, and is not there", async () => {
      for (const extra of [{ pull: true }, { cacheTtlSeconds: 0 }, { registry: { retry: { attempts: 1 }, registryMap: { [reg.host]: ["127.0.0.1:9"] } } }, { platform: "linux/arm64" }] satisfies Partial<BuildOptions>[]) {
        await expect(offline(base, extra), JSON.stringify(extra)).rejects.toMatchObject({ code: expect.stringMatching(/^REGISTRY_/) });
      }
    });

    it("a digest-pinned base is never asked for again, even with --pull", async () => {
      const r = await offline(pinned, { pull: true });
      expect(baseLayers(r)).toBe(1);
    });
  });
});
