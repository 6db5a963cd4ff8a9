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
import { build, validateEvent, type BuildEvent, type BuildOptions, type BuildResult } from "../../src/index.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot } from "../helpers/tools.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";

const ready = isRoot && haveRegistry() && have("bwrap");

const APP = "ARG BASE\nFROM ${BASE}\nRUN echo built > /built\n";

/** How many layers the built image's base contributed (the app adds one). */
const baseLayers = (r: BuildResult) => r.image.manifest.parsed.layers.length - 1;

/** The FROM step's report: how the base was resolved (and to what), what was pulled. */
const fromStep = (r: BuildResult) => {
  const s = r.steps[0]!;
  expect(s.instruction).toMatch(/^FROM /);
  return { cached: s.cached, reason: s.reason, ...s.base! };
};

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
    const first = await build(opts(tag, cacheDir));
    expect(baseLayers(first)).toBe(1);
    const v1 = fromStep(first).digest;
    expect(fromStep(first)).toMatchObject({ resolved: "registry", reason: expect.stringMatching(new RegExp(`^resolved ${tag} to ${v1}, pulled \\d+ bytes in [\\d.]+s$`)) });
    // The same tag now names another image: v1 plus a layer.
    const v2 = join(f.work, "v2");
    await mkdir(v2, { recursive: true });
    await writeFile(join(v2, "Dockerfile"), `FROM ${tag}\nRUN echo v2 > /version\n`);
    await build({ context: v2, tags: [tag], cacheDir: join(f.work, "v2-cache") });

    const reused = await build(opts(tag, cacheDir));
    expect(baseLayers(reused)).toBe(1);
    expect(fromStep(reused)).toEqual({ image: tag, digest: v1, resolved: "cache", pulledBytes: 0, pullSeconds: 0, cached: true, reason: `resolved from cache (${v1})` });
    const pulled = await build(opts(tag, cacheDir, { pull: true }));
    expect(baseLayers(pulled)).toBe(2);
    const v2digest = fromStep(pulled).digest;
    expect(v2digest).not.toBe(v1);
    expect(fromStep(pulled)).toMatchObject({ resolved: "registry", cached: false, reason: expect.stringContaining(`resolved ${tag} to ${v2digest}`) });
    // --pull rewrote the record: the next build without it has the new base too.
    const after = await build(opts(tag, cacheDir));
    expect(baseLayers(after)).toBe(2);
    expect(fromStep(after)).toMatchObject({ resolved: "cache", digest: v2digest });
    // So does a build whose record is older than the TTL.
    const other = join(f.work, "moving-ttl");
    await build(opts(tag, other));
    expect(baseLayers(await build(opts(tag, other, { cacheTtlSeconds: 0 })))).toBe(2);
  }, 180_000);

  it("--pull on the command line; FROM is a step of its own in the progress and the summary, with the pull", async () => {
    const r = await cli(["build", "--pull", "--no-push", "--progress", "plain", "--cache-dir", join(f.work, "cli-cache"), "--build-arg", `BASE=${f.base}`, app]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    const lines = r.stderr.split("\n");
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const digest = "sha256:[0-9a-f]{64}";
    expect(at(new RegExp(`^\\[0 1/2\\] FROM ${f.base}$`))).toBe(0);
    // The base's layers are pulled for the RUN: the FROM step ends then, with what it pulled.
    const fromEnd = at(new RegExp(`^\\[0 1/2\\] DONE [\\d.]+s \\(resolved ${f.base} to ${digest}, pulled \\d+ bytes in [\\d.]+s\\)$`));
    expect(fromEnd).toBeGreaterThan(at(/^\[0 2\/2\] RUN echo built > \/built$/));
    expect(fromEnd).toBeLessThan(at(/^\[0 2\/2\] DONE /));
    expect(r.stdout).toMatch(/^steps: 1 \(and 1 FROM\), cached: 0\/1$/m);
    expect(r.stdout).toMatch(new RegExp(`^ {2}BASE {3}\\[0\\] line 2: FROM ${f.base} \\(resolved ${f.base} to ${digest}, pulled \\d+ bytes in [\\d.]+s\\) [\\d.]+s$`, "m"));
  }, 120_000);

  it("the FROM step's events: valid, step 1 of the stage, its end once its layers are ready", async () => {
    const events: BuildEvent[] = [];
    const r = await build(opts(f.base, join(f.work, "events-cache"), { onEvent: (e) => events.push(e) }));
    expect(events.flatMap((e) => validateEvent(e))).toEqual([]);
    const steps = events.filter((e) => e.type === "step-start" || e.type === "step-end").map((e) => `${e.type} ${e.step}/${e.total}`);
    expect(steps).toEqual(["step-start 1/2", "step-start 2/2", "step-end 1/2", "step-end 2/2"]);
    const end = events.find((e): e is Extract<BuildEvent, { type: "step-end" }> => e.type === "step-end" && e.step === 1)!;
    const base = r.steps[0]!.base!;
    expect(end).toMatchObject({ instruction: `FROM ${f.base}`, cached: false, layer: null, resolved: "registry", pulledBytes: base.pulledBytes, seconds: r.steps[0]!.seconds });
    expect(base.pulledBytes).toBe(r.image.manifest.parsed.layers[0]!.size);
    expect(r.steps[0]!.seconds).toBeGreaterThanOrEqual(base.pullSeconds);
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
      expect(fromStep(r)).toMatchObject({ resolved: "cache", pulledBytes: 0, cached: true });
    });

    it("--pull, a record past the TTL, another mirror setting or platform: the registry is asked, and is not there", async () => {
      for (const extra of [{ pull: true }, { cacheTtlSeconds: 0 }, { registry: { retry: { attempts: 1 }, registryMap: { [reg.host]: ["127.0.0.1:9"] } } }, { platform: "linux/arm64" }] satisfies Partial<BuildOptions>[]) {
        await expect(offline(base, extra), JSON.stringify(extra)).rejects.toMatchObject({ code: expect.stringMatching(/^REGISTRY_/) });
      }
    });

    it("a digest-pinned base is never asked for again, even with --pull", async () => {
      const r = await offline(pinned, { pull: true });
      expect(baseLayers(r)).toBe(1);
      expect(fromStep(r)).toMatchObject({ resolved: "cache", image: pinned });
    });
  });
});
