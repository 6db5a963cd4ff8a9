/**
 * --no-cache-filter (buildx): the named stages' steps are rebuilt without a cache
 * lookup, the other stages still hit, and the report says why; an unknown stage is a
 * usage error naming it.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/api.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { cli, have, isRoot } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap");

// Three stages; the last copies from the other two. Built reproducibly, a rebuilt
// stage gives the same layer, so the stage after it still hits (as in BuildKit).
const DOCKERFILE = `ARG BASE
FROM \${BASE} AS one
RUN echo one > /one
FROM \${BASE} AS Two
RUN echo two > /two
FROM \${BASE} AS three
COPY --from=one /one /one
COPY --from=Two /two /two
RUN cat /one /two > /both
`;

describe.skipIf(!ready)("--no-cache-filter (needs root, bwrap, docker-registry)", () => {
  const f = useBusyboxRegistry("cache-filter");
  let ctx: string;
  const args = (...extra: string[]) => ["build", "--no-push", "--reproducible", "--progress", "plain", "--cache-dir", f.cacheDir, "--build-arg", `BASE=${f.base}`, ...extra, ctx];

  beforeAll(async () => {
    ctx = join(f.work, "ctx");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), DOCKERFILE);
    const first = await cli(args());
    expect(first.stderr).not.toMatch(/error\[/);
    expect(first.code).toBe(0);
  }, 120_000);

  it("rebuilds the named stage's steps and only them, saying why in the progress and the summary", async () => {
    const r = await cli(args("--no-cache-filter", "two"));
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    const rows = r.stdout.split("\n").filter((l) => /^ {2}(CACHED|BUILT)/.test(l));
    expect(rows.filter((l) => l.startsWith("  BUILT"))).toEqual([expect.stringMatching(/^ {2}BUILT +\[two\] line 5: RUN echo two > \/two \(excluded by --no-cache-filter\) /)]);
    expect(rows.filter((l) => l.startsWith("  CACHED")).map((l) => /\[(\w+)\]/.exec(l)![1])).toEqual(["one", "three", "three", "three"]);
    expect(r.stderr).toMatch(/\[two \d+\/\d+\] DONE [\d.]+s layer [0-9a-f]+ \(excluded by --no-cache-filter\)/);
  }, 120_000);

  it("takes stage indexes and comma-separated lists; the library's reason names its option", async () => {
    const steps = (await build({ context: ctx, push: false, sourceDateEpoch: 0, cacheDir: f.cacheDir, buildArgs: { BASE: f.base }, noCacheFilter: ["0", "three"] })).steps.filter((s) => !s.base);
    expect(steps.map((s) => [s.stage, s.cached, s.reason])).toEqual([
      ["one", false, "excluded by the noCacheFilter option"],
      ["two", true, undefined],
      ["three", false, "excluded by the noCacheFilter option"],
      ["three", false, "excluded by the noCacheFilter option"],
      ["three", false, "excluded by the noCacheFilter option"],
    ]);
    const cliRun = await cli(args("--no-cache-filter", "0,TWO"));
    expect(cliRun.code).toBe(0);
    expect(cliRun.stdout.split("\n").filter((l) => l.includes("(excluded by --no-cache-filter)")).map((l) => /\[(\w+)\]/.exec(l)![1])).toEqual(["one", "two"]);
  }, 120_000);

  it("an unknown stage is a usage error naming it, before anything is built", async () => {
    const r = await cli(args("--no-cache-filter", "tow"));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('error[USAGE_BAD_VALUE]: --no-cache-filter tow: the Dockerfile has no stage named "tow"');
    expect(r.stderr).toContain("hint: did you mean two?");
    expect(r.stderr).not.toMatch(/\[one \d/);
  });
});
