/**
 * The cache end to end on a busybox base in a real registry: what a rebuild reuses,
 * what it redoes, what the report says, corruption, concurrency, a shared registry
 * cache, and reproducible digests.
 */
import { cp, mkdtemp, readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, type BuildOptions } from "../../src/builder/build.js";
import { KEY_VERSION } from "../../src/cache/key.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap");

const DOCKERFILE = `ARG BASE
FROM \${BASE}
WORKDIR /app
COPY deps.txt ./
RUN cp deps.txt deps.installed
ARG VERSION=1.0
COPY src/ ./src/
RUN echo "version $VERSION" > version && ls src > listing
ENV MODE=prod
CMD ["cat", "/app/version"]
`;

describe.skipIf(!ready)("per-instruction cache (needs root, bwrap, docker-registry)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let ctx: string;

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-cache-"));
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "basecache") });
    ctx = join(work, "ctx");
    await cp(join(work, "base"), join(work, "unused"), { recursive: true }).catch(() => {});
    await writeFile(join(work, "Dockerfile"), DOCKERFILE);
    await makeContext(ctx);
  }, 120_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function makeContext(dir: string) {
    await rm(dir, { recursive: true, force: true });
    await cp(join(work, "Dockerfile"), join(dir, "Dockerfile")).catch(async () => {
      await import("node:fs/promises").then((fs) => fs.mkdir(dir, { recursive: true }));
      await cp(join(work, "Dockerfile"), join(dir, "Dockerfile"));
    });
    await import("node:fs/promises").then((fs) => fs.mkdir(join(dir, "src"), { recursive: true }));
    await writeFile(join(dir, "deps.txt"), "requests==2\n");
    await writeFile(join(dir, "src/app.py"), "print('hi')\n");
    await writeFile(join(dir, "src/util.py"), "X = 1\n");
  }

  function opts(extra: Partial<BuildOptions> = {}): BuildOptions {
    return { context: ctx, tags: [`${reg.host}/test/cache:v1`], buildArgs: { BASE: base }, cacheDir: join(work, "cache"), ...extra };
  }

  const byText = <T extends { instruction: string }>(steps: T[], prefix: string): T => steps.find((s) => s.instruction.startsWith(prefix))!;

  it("a second build with nothing changed is fully cached, pushes nothing new, same digest", async () => {
    const first = await build(opts());
    // FROM is a step of its own (the base pulled for the first RUN), then the instructions.
    const [from, ...steps] = first.steps;
    expect(from).toMatchObject({ instruction: `FROM ${base}`, line: 2, cached: false, layer: null, base: { image: base, resolved: "registry" } });
    expect(from!.base!.pulledBytes).toBeGreaterThan(0);
    expect(steps.every((s) => !s.cached && s.reason === "no previous entry")).toBe(true);
    const events: BuildEvent[] = [];
    const second = await build(opts({ onEvent: (e) => events.push(e) }));
    // The base's resolution is this cache directory's record now, its layers are here: the FROM step is cached too.
    expect(second.steps.map((s) => s.cached)).toEqual(first.steps.map(() => true));
    expect(second.steps[0]!.base).toMatchObject({ resolved: "cache", pulledBytes: 0 });
    expect(second.digest).toBe(first.digest);
    expect(second.cache.hits).toBe(steps.length);
    expect(second.cache.misses).toBe(0);
    expect(second.cache.secondsSaved).toBeGreaterThan(0);
    const pushes = events.filter((e): e is Extract<BuildEvent, { type: "push" }> => e.type === "push");
    expect(pushes.length).toBeGreaterThan(0);
    expect(pushes.filter((p) => p.status !== "exists")).toEqual([]);
  });

  it("changing one COPY source rebuilds from that COPY on, and the report names the file", async () => {
    await writeFile(join(ctx, "src/app.py"), "print('changed')\n");
    const r = await build(opts());
    const copySrc = byText(r.steps, "COPY src/");
    expect(copySrc.cached).toBe(false);
    expect(copySrc.reason).toBe("src/app.py changed");
    for (const p of ["ARG VERSION", "WORKDIR", "COPY deps.txt", "RUN cp deps.txt"]) expect(byText(r.steps, p).cached).toBe(true);
    expect(byText(r.steps, "RUN echo").cached).toBe(false);
    expect(byText(r.steps, "RUN echo").reason).toBe("parent step rebuilt");
  });

  it("changing a build arg used by a RUN names the arg; steps before it stay cached", async () => {
    const r = await build(opts({ buildArgs: { BASE: base, VERSION: "1.1" } }));
    expect(byText(r.steps, "ARG VERSION").reason).toBe('build arg VERSION changed ("1.0" -> "1.1")');
    const run = byText(r.steps, "RUN echo");
    expect(run.cached).toBe(false);
    expect(run.reason).toBe('build arg VERSION changed ("1.0" -> "1.1")');
    expect(byText(r.steps, "COPY src/").cached).toBe(true);
    expect(byText(r.steps, "RUN cp deps.txt").cached).toBe(true);
  });

  it("a corrupt cache entry is detected, removed and rebuilt, never used", async () => {
    await build(opts());
    const blobs = join(work, "cache", "content", "blobs", "sha256");
    const records = join(work, "cache", "cache", `v${KEY_VERSION}`, "records");
    // Corrupt the layer blob of the "RUN cp deps.txt" step.
    let target: { layer: { digest: string } } | undefined;
    for (const f of await readdir(records)) {
      const rec = JSON.parse(await readFile(join(records, f), "utf8"));
      if (rec.inputs.instruction.includes("cp deps.txt deps.installed")) target = rec;
    }
    expect(target?.layer).toBeDefined();
    await writeFile(join(blobs, target!.layer.digest.slice(7)), "garbage");
    const r = await build(opts());
    const step = byText(r.steps, "RUN cp deps.txt");
    expect(step.cached).toBe(false);
    expect(step.reason).toMatch(/does not match its digest|has \d+ bytes/);
    const again = await build(opts());
    expect(byText(again.steps, "RUN cp deps.txt").cached).toBe(true);
    expect(again.digest).toBe(r.digest);
  });

  it("a layer verified once is not re-hashed, but one changed in place since (same size) is caught", async () => {
    await build(opts());
    const blobs = join(work, "cache", "content", "blobs", "sha256");
    const cacheDir = join(work, "cache", "cache", `v${KEY_VERSION}`);
    let target: { layer: { digest: string; size: number } } | undefined;
    for (const f of await readdir(join(cacheDir, "records"))) {
      const rec = JSON.parse(await readFile(join(cacheDir, "records", f), "utf8"));
      if (rec.inputs.instruction.includes("cp deps.txt deps.installed")) target = rec;
    }
    const hex = target!.layer.digest.slice(7);
    // The hit above hashed the blob and remembered the file it hashed.
    const marker = join(cacheDir, "verified", hex);
    const remembered = await readFile(marker, "utf8");
    expect(remembered).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    expect(byText((await build(opts())).steps, "RUN cp deps.txt").cached).toBe(true);
    expect(await readFile(marker, "utf8")).toBe(remembered);
    // Flip one byte in place: same size, same inode; the change time moves, so it is hashed again.
    const blob = join(blobs, hex);
    const bytes = await readFile(blob);
    bytes[bytes.length - 1] ^= 0xff;
    await writeFile(blob, bytes);
    const r = await build(opts());
    const step = byText(r.steps, "RUN cp deps.txt");
    expect(step.cached).toBe(false);
    expect(step.reason).toMatch(/does not match its digest/);
    expect(byText((await build(opts())).steps, "RUN cp deps.txt").cached).toBe(true);
  });

  it("two concurrent builds sharing a cache dir both succeed", async () => {
    const shared = join(work, "shared-cache");
    const [a, b] = await Promise.all([build(opts({ cacheDir: shared, push: false })), build(opts({ cacheDir: shared, push: false }))]);
    expect(a.steps.length).toBe(b.steps.length);
    const third = await build(opts({ cacheDir: shared, push: false }));
    expect(third.steps.every((s) => s.cached)).toBe(true);
  });

  it("--cache-repo lets a second machine (a fresh cache dir) hit", async () => {
    const cacheRepo = `${reg.host}/test/buildcache`;
    const one = await build(opts({ cacheDir: join(work, "machine1"), cacheRepo }));
    expect(one.steps.some((s) => s.cached)).toBe(false);
    const two = await build(opts({ cacheDir: join(work, "machine2"), cacheRepo }));
    // A fresh machine resolves the base in its registry, but pulls none of its layers: every step hits.
    expect(two.steps[0]!.base).toMatchObject({ resolved: "registry", pulledBytes: 0 });
    expect(two.steps.slice(1).every((s) => s.cached)).toBe(true);
    expect(two.digest).toBe(one.digest);
    // And a change on machine 2 is explained from the registry's record.
    await writeFile(join(ctx, "deps.txt"), "requests==3\n");
    const three = await build(opts({ cacheDir: join(work, "machine3"), cacheRepo }));
    expect(byText(three.steps, "COPY deps.txt").reason).toBe("deps.txt changed");
    await writeFile(join(ctx, "deps.txt"), "requests==2\n");
  });

  it("a registry hit remembered locally is not taken for a corrupt local entry on the next build", async () => {
    const cacheRepo = `${reg.host}/test/buildcache-again`;
    await build(opts({ cacheDir: join(work, "m1-again"), cacheRepo }));
    // Machine 2 hits the registry, twice; its content store never holds the layers.
    for (let i = 0; i < 2; i++) {
      const warnings: string[] = [];
      const r = await build(opts({ cacheDir: join(work, "m2-again"), cacheRepo, onEvent: (e) => void (e.type === "log" && e.level === "warn" && warnings.push(e.message)) }));
      expect(r.steps.filter((s) => !s.base).every((s) => s.cached)).toBe(true);
      expect(warnings).toEqual([]);
    }
  });

  it("--no-cache builds everything; with SOURCE_DATE_EPOCH two context copies with different mtimes give one digest", async () => {
    const c1 = join(work, "copy1");
    const c2 = join(work, "copy2");
    await makeContext(c1);
    await makeContext(c2);
    // Both copies are newer than the epoch (as checkouts are), with different mtimes.
    await utimes(join(c2, "src/app.py"), new Date("2024-01-01"), new Date("2024-01-01"));
    await utimes(join(c1, "deps.txt"), new Date("2025-06-01"), new Date("2025-06-01"));
    const r1 = await build(opts({ context: c1, noCache: true, sourceDateEpoch: 1700000000, push: false, cacheDir: join(work, "r1") }));
    const r2 = await build(opts({ context: c2, noCache: true, sourceDateEpoch: 1700000000, push: false, cacheDir: join(work, "r2") }));
    expect(r1.steps.filter((s) => !s.base).every((s) => !s.cached && s.reason === "cache disabled (the noCache option)")).toBe(true);
    expect(r2.digest).toBe(r1.digest);
  });

  it("a dry run reports what would be cached and rebuilt without executing", async () => {
    await build(opts());
    await writeFile(join(ctx, "src/util.py"), "X = 2\n");
    const r = await build(opts({ dryRun: true }));
    expect(byText(r.steps, "COPY deps.txt").cached).toBe(true);
    expect(byText(r.steps, "COPY src/").reason).toBe("src/util.py changed");
    expect(byText(r.steps, "RUN echo").reason).toBe("parent step rebuilt");
    expect(r.digest).toBe("");
    // Nothing was executed: the real build still misses at the same place.
    const real = await build(opts());
    expect(byText(real.steps, "COPY src/").cached).toBe(false);
  });
});
