/**
 * ARG semantics that decide what RUN sees, end to end on the busybox base in a real
 * registry, checked with umoci: each expectation is what BuildKit's Dockerfile
 * frontend (dockerfile2llb dispatchArg, dispatchState.init) gives.
 */
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci") && have("skopeo");

describe.skipIf(!ready)("build args end to end (needs root, bwrap, docker-registry, umoci, skopeo)", () => {
  const fx = useBusyboxRegistry("e2e-args");
  let work: string;
  let base: string;

  beforeAll(() => {
    ({ work, base } = fx);
  });

  /** Build `dockerfile`, unpack the image; the rootfs path and the image config. */
  async function buildImage(name: string, dockerfile: string, buildArgs: Record<string, string> = {}) {
    const ctx = join(work, name);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), dockerfile);
    const layout = join(work, `${name}-img`);
    await build({ context: ctx, buildArgs: { BASE: base, ...buildArgs }, cacheDir: join(work, "cache"), outputs: [{ type: "oci", dest: layout, tag: "v1" }] });
    await run("umoci", ["unpack", "--image", `${layout}:v1`, join(work, `${name}-bundle`)]);
    const config = JSON.parse((await run("skopeo", ["inspect", "--config", `oci:${layout}:v1`])).stdout) as {
      config: { Env?: string[] };
      history: { created_by?: string }[];
    };
    return { root: join(work, `${name}-bundle`, "rootfs"), config };
  }

  it("a stage FROM another stage sees that stage's ARG values, in RUN and in ARG defaults", async () => {
    const dockerfile = [
      "ARG BASE",
      "FROM ${BASE} AS base",
      "ARG NAME=base",
      "FROM base",
      'ARG N2="$NAME-dev"',
      'RUN echo "[$NAME] [$N2]" > /out',
      "",
    ].join("\n");
    const { root, config } = await buildImage("inherit", dockerfile);
    expect(await readFile(join(root, "out"), "utf8")).toBe("[base] [base-dev]\n");
    // Build args reach RUN, never the image's environment.
    expect((config.config.Env ?? []).filter((e) => /^(NAME|N2)=/.test(e))).toEqual([]);
    const again = await buildImage("inherit-cli", dockerfile, { NAME: "cli" });
    expect(await readFile(join(again.root, "out"), "utf8")).toBe("[cli] [cli-dev]\n");
  });

  it("a bare ARG keeps the value it already has; ARG a=1 b=$a sees a", async () => {
    const dockerfile = [
      "ARG BASE",
      "FROM ${BASE} AS base",
      "ARG NAME=base",
      "FROM base",
      "ARG NAME",
      "ARG A=1 B=$A",
      "ARG C=3",
      "ARG C",
      'RUN echo "[$NAME] [$B] [$C]" > /out',
      "",
    ].join("\n");
    const { root } = await buildImage("bare", dockerfile);
    expect(await readFile(join(root, "out"), "utf8")).toBe("[base] [1] [3]\n");
  });

  it("between ENV and ARG of one name the later wins for the build; the image keeps the ENV", async () => {
    const dockerfile = [
      "ARG BASE",
      "FROM ${BASE}",
      "ENV X=env",
      "ARG X=arg",
      "ARG Y=arg",
      "ENV Y=env",
      "ENV Z=$X-$Y",
      'RUN echo "[$X] [$Y]" > /out',
      "",
    ].join("\n");
    const { root, config } = await buildImage("order", dockerfile);
    expect(await readFile(join(root, "out"), "utf8")).toBe("[arg] [env]\n");
    expect((config.config.Env ?? []).filter((e) => /^[XYZ]=/.test(e))).toEqual(["X=env", "Y=env", "Z=arg-env"]);
    expect(config.history.at(-1)?.created_by).toMatch(/^RUN \|1 X=arg /);
  });

  it("an ARG's name is not expanded (BuildKit since dockerfile 1.8): ARG ${src}=v does not declare $src's value", async () => {
    const dockerfile = ["ARG BASE", "FROM ${BASE}", "ENV src=file3", "ARG ${src}=default", 'RUN echo "[${file3:-unset}]" > /out', ""].join("\n");
    const { root, config } = await buildImage("argname", dockerfile);
    expect(await readFile(join(root, "out"), "utf8")).toBe("[unset]\n");
    expect(config.history.some((h) => h.created_by === "ARG ${src}=default")).toBe(true);
  });

  it("a secret-looking build arg's value shows nowhere: output, metadata file, cache records; a hit restores the history", async () => {
    const ctx = join(work, "secret");
    const cacheDir = join(work, "secret-cache");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), ["ARG BASE", "FROM ${BASE}", "ARG API_TOKEN", 'RUN echo "using $API_TOKEN" && echo "$API_TOKEN" > /token', ""].join("\n"));
    const buildWith = async (value: string, n: number) => {
      const meta = join(work, `secret-meta-${n}.json`);
      const layout = join(work, `secret-img-${n}`);
      const r = await cli(["--no-push", "--progress", "plain", "--output", `oci:${layout}:v1`, "--build-arg", `BASE=${base}`, "--build-arg", `API_TOKEN=${value}`, "--cache-dir", cacheDir, "--metadata-file", meta, ctx]);
      expect(r.code, r.stderr).toBe(0);
      const config = JSON.parse((await run("skopeo", ["inspect", "--config", `oci:${layout}:v1`])).stdout) as { history: { created_by?: string }[] };
      return { out: r.stdout + r.stderr, meta: await readFile(meta, "utf8"), config };
    };
    const first = await buildWith("s3cr3t", 1);
    const second = await buildWith("changed-value", 2);
    const third = await buildWith("s3cr3t", 3);
    for (const b of [first, second, third]) {
      expect(b.out).not.toContain("s3cr3t");
      expect(b.meta).not.toContain("s3cr3t");
    }
    expect(first.out).toContain("using ****");
    expect(first.out.match(/look(s)? like a secret/g)).toHaveLength(1);
    expect(first.out).toContain("--secret id=API_TOKEN");
    const steps = (m: string) => (JSON.parse(m) as { "ocibuild.steps": { instruction: string; cached: boolean; reason?: string }[] })["ocibuild.steps"];
    const run2 = steps(second.meta).find((s) => s.instruction.startsWith("RUN"))!;
    expect(run2).toMatchObject({ cached: false, reason: "build arg API_TOKEN changed (value hidden)" });
    expect(steps(third.meta).find((s) => s.instruction.startsWith("RUN"))).toMatchObject({ cached: true });
    // The image history keeps the build arg, as Docker's does; a cache hit restores it from the sealed record.
    expect(first.config.history.at(-1)?.created_by).toContain("API_TOKEN=s3cr3t");
    expect(third.config).toEqual(first.config);
    const records: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        if (e.isDirectory()) await walk(join(dir, e.name));
        else records.push(await readFile(join(dir, e.name), "utf8"));
      }
    };
    await walk(join(cacheDir, "cache"));
    expect(records.length).toBeGreaterThan(2);
    expect(records.filter((r) => r.includes("s3cr3t"))).toEqual([]);
    expect(records.some((r) => r.includes("[secret sha256:"))).toBe(true);
  });
});
