/**
 * A step's new layer is compressed while the next step runs: the next step starts
 * once the layer's files are read and hashed (its DiffID keys that step, its upper
 * directory is that step's lower layer), as BuildKit makes blobs only at export.
 * What must still hold: the step ends (event, report, cache record) only once its
 * blob is written, the stage's steps end in order, the image is the same, and a
 * build stopped while a blob is compressed leaves no record, blob or mount of it.
 * Real builds in bubblewrap on the busybox base, at gzip level 9 so that the COPY's
 * 3 MiB of text compress for far longer than they take to read.
 */
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { build, isOcibuildError, type BuildEvent, type BuildOptions, type BuildResult } from "../../src/index.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot } from "../helpers/tools.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { startFaultProxy } from "../helpers/fault-proxy.js";

const ready = isRoot && haveRegistry() && have("bwrap");

const DOCKERFILE = "ARG BASE\nFROM ${BASE}\nCOPY words.txt /words.txt\nRUN wc -c /words.txt > /count\n";

/** About 3 MiB of words from a fixed generator: compressible, and slow to deflate at level 9. */
function words(): string {
  const vocab = ["layer", "blob", "gzip", "stage", "step", "cache", "digest", "tar", "overlay", "registry", "manifest", "index", "config", "sandbox"];
  let x = 12345;
  const out: string[] = [];
  for (let n = 0; n < 3 << 20; ) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = `${vocab[x % vocab.length]}${x % 977}`;
    out.push(w);
    n += w.length + 1;
  }
  return out.join(" ");
}

describe.skipIf(!ready)("a step's layer is compressed while the next step runs (needs root, bwrap, docker-registry)", () => {
  const f = useBusyboxRegistry("layer-overlap");

  async function context(name: string): Promise<string> {
    const dir = join(f.work, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), DOCKERFILE);
    await writeFile(join(dir, "words.txt"), words());
    return dir;
  }

  async function run(dir: string, cacheDir: string, extra: Partial<BuildOptions> = {}): Promise<{ events: BuildEvent[]; result?: BuildResult; error?: unknown }> {
    const events: BuildEvent[] = [];
    try {
      const result = await build({ context: dir, push: false, cacheDir, compressionLevel: 9, buildArgs: { BASE: f.base }, onEvent: (e) => events.push(e), ...extra });
      return { events, result };
    } catch (error) {
      return { events, error };
    }
  }

  const index = (events: BuildEvent[], test: (e: BuildEvent) => boolean) => events.findIndex(test);
  const isStart = (step: number) => (e: BuildEvent) => e.type === "step-start" && e.step === step;
  const isEnd = (step: number) => (e: BuildEvent) => e.type === "step-end" && e.step === step;
  const copyWritten = (e: BuildEvent) => e.type === "layer-write" && e.step === 2 && e.done;

  it("the RUN starts before the COPY's layer is written; the COPY ends after it, in order, and a rebuild is the same image, all cached", async () => {
    const dir = await context("overlap");
    const cacheDir = join(f.work, "cache-overlap");
    const first = await run(dir, cacheDir);
    expect(first.error).toBeUndefined();
    const e = first.events;
    // Step 2 is the COPY (after FROM), step 3 the RUN.
    expect(index(e, isStart(3))).toBeGreaterThan(index(e, isStart(2)));
    expect(index(e, isStart(3))).toBeLessThan(index(e, copyWritten));
    expect(index(e, copyWritten)).toBeLessThan(index(e, isEnd(2)));
    expect(index(e, isEnd(2))).toBeLessThan(index(e, isEnd(3)));
    const copyEnd = e[index(e, isEnd(2))] as Extract<BuildEvent, { type: "step-end" }>;
    const written = e[index(e, copyWritten)] as Extract<BuildEvent, { type: "layer-write" }>;
    expect(copyEnd.layer).toBe(written.digest);
    expect(first.result!.steps.map((s) => s.layer)).toEqual([null, written.digest, expect.stringMatching(/^sha256:/)]);
    expect(first.result!.image.manifest.parsed.layers.map((l) => l.digest)).toContain(written.digest);
    // The record was stored once the blob was: the rebuild hits both steps and makes the same image.
    const again = await run(dir, cacheDir);
    expect(again.error).toBeUndefined();
    expect(again.result!.steps.slice(1).map((s) => s.cached)).toEqual([true, true]);
    expect(again.result!.digest).toBe(first.result!.digest);
  }, 120_000);

  it("with copy-mode roots (no upper directory kept), the RUN's root waits for the COPY's blob and extracts it: the same image as with overlayfs", async () => {
    const dir = await context("copy-mode");
    const overlay = await run(dir, join(f.work, "cache-copy-overlay"), { sourceDateEpoch: 1_700_000_000 });
    const copied = await run(dir, join(f.work, "cache-copy-mode"), { sourceDateEpoch: 1_700_000_000, forceCopySnapshots: true });
    expect(overlay.error).toBeUndefined();
    expect(copied.error).toBeUndefined();
    expect(copied.result!.image.manifest.parsed.layers.map((l) => l.digest)).toEqual(overlay.result!.image.manifest.parsed.layers.map((l) => l.digest));
  }, 120_000);

  it("a build stopped while the COPY's blob is compressed fails as aborted and leaves no record, blob, temp file or mount of it", async () => {
    const dir = await context("stopped");
    const cacheDir = join(f.work, "cache-stopped");
    const stop = new AbortController();
    const events: BuildEvent[] = [];
    const stopped = await run(dir, cacheDir, {
      signal: stop.signal,
      onEvent: (e) => {
        events.push(e);
        // The RUN has started: the COPY's blob is still being compressed (the first test shows the order).
        if (isStart(3)(e)) stop.abort();
      },
    });
    expect(isOcibuildError(stopped.error) && stopped.error.code).toBe("ABORTED");
    expect(index(events, copyWritten)).toBe(-1);
    expect(index(events, isEnd(2))).toBe(-1);
    // Nothing half-written in the content store, nothing mounted under the cache directory.
    const blobs = join(cacheDir, "content", "blobs", "sha256");
    const names = existsSync(blobs) ? await readdir(blobs) : [];
    expect(names.filter((n) => !/^[0-9a-f]{64}$/.test(n))).toEqual([]);
    expect((await readFile("/proc/self/mountinfo", "utf8")).includes(cacheDir)).toBe(false);
    // No record of the COPY: the next build runs it again, for the reason a first build gives.
    const next = await run(dir, cacheDir);
    expect(next.error).toBeUndefined();
    expect(next.result!.steps[1]).toMatchObject({ cached: false, reason: "no previous entry" });
  }, 120_000);

  it("a push of an image with a layer the build wrote does not ask whether the repository holds its manifest; a cached rebuild's does, and puts nothing (or only the manifest, to a new tag)", async () => {
    const dir = await context("push");
    const cacheDir = join(f.work, "cache-push");
    const proxy = await startFaultProxy({ port: f.reg.port });
    try {
      const tag = `${proxy.host}/overlap/app:v1`;
      const manifestAsks = () => proxy.log.filter((r) => r.method === "HEAD" && /\/manifests\/sha256:/.test(r.path)).length;
      const puts = () => proxy.log.filter((r) => r.method === "PUT").length;
      const fresh = await run(dir, cacheDir, { tags: [tag], push: true });
      expect(fresh.error).toBeUndefined();
      expect(manifestAsks()).toBe(0);
      expect(puts()).toBeGreaterThan(0);
      proxy.log.length = 0;
      // Nothing built: the manifest may well be there (it is), so it is asked for, and nothing is written.
      const cached = await run(dir, cacheDir, { tags: [tag], push: true });
      expect(cached.result!.digest).toBe(fresh.result!.digest);
      expect(proxy.log.some((r) => r.method === "HEAD" && r.path.endsWith("/manifests/v1"))).toBe(true);
      expect(puts()).toBe(0);
      // The same image to a new tag: the repository holds its manifest, so the push puts it
      // under the tag, and that put is its only write: no upload session opened (the
      // push-permission check) before it.
      proxy.log.length = 0;
      const retagged = await run(dir, cacheDir, { tags: [`${proxy.host}/overlap/app:v2`], push: true });
      expect(retagged.result!.digest).toBe(fresh.result!.digest);
      expect(proxy.log.filter((r) => r.method !== "HEAD").map((r) => `${r.method} ${r.path}`)).toEqual(["PUT /v2/overlap/app/manifests/v2"]);
      // SOURCE_DATE_EPOCH pins the history's times: a rebuild that writes its layers again may make a manifest already pushed.
      proxy.log.length = 0;
      const pinned = await run(dir, join(f.work, "cache-push-pinned"), { tags: [tag], push: true, sourceDateEpoch: 1_700_000_000 });
      expect(pinned.error).toBeUndefined();
      expect(manifestAsks()).toBe(1);
    } finally {
      await proxy.stop();
    }
  }, 120_000);
});

