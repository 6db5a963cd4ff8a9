/**
 * What a fully cached rebuild loads: the bundled CLI (dist/ocibuild.cjs) in a fresh
 * process, pushing to a plain-HTTP registry with every step from the cache, must not
 * load the Node builtins only other builds need (each costs a CLI run milliseconds to
 * load): node:https and node:tls (HTTPS registries), node:perf_hooks (nothing: the
 * clock is process.hrtime), node:child_process (with node:dgram: processes a step
 * starts) and node:zlib (layers written or read). The loaded builtins are read from process.moduleLoadList
 * when the process exits.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot } from "../helpers/tools.js";

const bundle = resolve(import.meta.dirname, "../../dist/ocibuild.cjs");
const exec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && existsSync(bundle);

/** Runs the bundle's main with `args`; writes the builtins it loaded to `out`. */
const RUNNER = `
const { writeFileSync } = require("node:fs");
const [bundle, out, ...args] = process.argv.slice(2);
process.on("exit", () => writeFileSync(out, process.moduleLoadList.filter((m) => m.startsWith("NativeModule ")).map((m) => m.slice(13)).join("\\n")));
require(bundle).main(args).then((code) => (process.exitCode = code));
`;

describe.skipIf(!ready)("a fully cached rebuild through the bundle (needs root, bwrap, docker-registry and npm run build)", () => {
  const fx = useBusyboxRegistry("cached-modules");
  let runner: string;
  let ctx: string;

  beforeAll(async () => {
    runner = join(fx.work, "runner.cjs");
    await writeFile(runner, RUNNER);
    ctx = join(fx.work, "ctx");
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nRUN echo one > /one\nENV A=1\nRUN echo two > /two\n");
  });

  async function buildOnce(name: string): Promise<{ events: { type: string; cached?: boolean }[]; builtins: string[] }> {
    const out = join(fx.work, `${name}.modules`);
    const args = ["build", "--progress", "json", "--cache-dir", fx.cacheDir, "--build-arg", `BASE=${fx.base}`, "-t", `${fx.reg.host}/cached/app:v1`, ctx];
    const r = await exec(process.execPath, [runner, bundle, out, ...args], { env: { ...process.env, NODE_EXTRA_CA_CERTS: "" } });
    const events = r.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { type: string; cached?: boolean });
    return { events, builtins: (await readFile(out, "utf8")).split("\n") };
  }

  it("loads neither node:https, node:tls, node:perf_hooks, node:child_process, node:dgram nor node:zlib", async () => {
    await buildOnce("first");
    const { events, builtins } = await buildOnce("second");
    const steps = events.filter((e) => e.type === "step-end");
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.every((e) => e.cached === true)).toBe(true);
    expect(builtins).toContain("http");
    expect(builtins.filter((m) => ["https", "tls", "perf_hooks", "child_process", "dgram", "zlib"].includes(m))).toEqual([]);
  }, 120_000);
});
