/**
 * The library API as a user meets it: the package is compiled (`tsc -p .`), every
 * example in docs/library.md is extracted and run with node, importing
 * "ocibuild" through the package's own exports (dist/), against a real local
 * registry; what each prints is checked, and the registry is asked whether it
 * holds what the examples say they pushed. Then the in-process API: buildEvents'
 * async iterator, events valid against their types, errors and cancellation.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildEvents, isOcibuildError, validateEvent, type BuildEvent } from "../../src/index.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ROOT = resolve(__dirname, "../..");
const DOC = join(ROOT, "docs/library.md");

/** The ```js blocks of the page that start with `// example: NAME`, in order. */
async function examples(): Promise<{ name: string; code: string }[]> {
  const text = await readFile(DOC, "utf8");
  const out: { name: string; code: string }[] = [];
  for (const m of text.matchAll(/```js\n\/\/ example: (\S+)\n([\s\S]*?)```/g)) out.push({ name: m[1]!, code: m[2]! });
  return out;
}

/** What each example must print (every example on the page must be listed here). */
const EXPECT: Record<string, (stdout: string, reg: TestRegistry) => Promise<void> | void> = {
  "build-push": async (out, reg) => {
    // The build arg given wins over the Dockerfile's default, and the report shows it expanded.
    expect(out).toMatch(/^step 1\/4 (built|CACHED): ARG VERSION=1\.0$/m);
    expect(out).toMatch(/^step 2\/4 (built|CACHED): LABEL version=1\.0$/m);
    expect(out).toMatch(/^step 3\/4 (built|CACHED): COPY hello.txt \/$/m);
    expect(out).toMatch(/^push sha256:[a-f0-9]{12} (uploaded|exists)$/m);
    const digest = /^digest (sha256:[a-f0-9]{64})$/m.exec(out)?.[1];
    expect(digest).toBeDefined();
    expect(out).toContain(`pushed ${reg.host}/examples/hello:v1@${digest}`);
    const seen = (await run("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${reg.host}/examples/hello:v1`])).stdout.trim();
    expect(seen).toBe(digest);
  },
  "build-events": (out) => {
    const seen = JSON.parse(/^events (.*)$/m.exec(out)![1]!);
    expect(seen["step-start"]).toBe(1);
    expect(seen["step-end"]).toBe(1);
    expect(seen["output-written"]).toBe(2);
    expect(seen.result).toBe(1);
    expect(seen.push).toBeUndefined();
    expect(out).toMatch(/^digest sha256:[a-f0-9]{64}$/m);
    expect(out).toContain("oci-archive true");
    expect(out).toMatch(/^written oci-archive:\S+image\.oci\.tar:v1 docker-archive:\S+image\.docker\.tar$/m);
  },
  "inspect-copy": (out) => {
    expect(out).toMatch(/^manifest sha256:[a-f0-9]{64} application\/vnd\.oci\.image\.manifest\.v1\+json$/m);
    expect(out).toContain('labels {"version":"1.0"}');
    expect(out).toContain("copied true true");
  },
  "parse-expand": (out) => {
    expect(out.split("\n").slice(0, 4)).toEqual(["1 from", "2 run", "3 copy", "world//root"]);
    expect(out).toMatch(/^DOCKERFILE_[A-Z_]+ line 2$/m);
  },
  run: (out) => {
    expect(out).toContain("said hello from /tmp, exit 0");
    expect(out).toMatch(/^exit 3$/m);
  },
  abort: (out) => {
    expect(out.trim()).toBe("cancelled: ABORTED");
  },
};

const ready = isRoot && haveRegistry() && have("skopeo");

describe.skipIf(!ready)("docs/library.md examples, run with node against the compiled package (needs root, docker-registry, skopeo)", () => {
  let reg: TestRegistry;
  let work: string;
  let scripts: string;

  beforeAll(async () => {
    // The package self-reference ("ocibuild") resolves to dist/: compile it first.
    // Type errors elsewhere in the tree do not stop tsc from emitting; dist/index.js must exist.
    await pexec("npx", ["tsc", "-p", "."], { cwd: ROOT, maxBuffer: 16 << 20 }).catch(() => undefined);
    if (!existsSync(join(ROOT, "dist/index.js"))) throw new Error("tsc did not produce dist/index.js");
    // tsc rewrote every module: the CLI bundle made from them is remade too, or bin/ocibuild
    // would take it for stale and run the modules without its code cache after this test.
    await pexec(process.execPath, ["scripts/bundle.mjs"], { cwd: ROOT, maxBuffer: 16 << 20 });
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-lib-"));
    // Inside the package, so that `import "ocibuild"` resolves through package.json#exports.
    scripts = join(ROOT, ".cache", `doc-examples-${process.pid}`);
    await mkdir(scripts, { recursive: true });
  }, 300_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
    if (scripts) await rm(scripts, { recursive: true, force: true });
  });

  it("every example on the page has an expectation, and there are examples", async () => {
    const names = (await examples()).map((e) => e.name);
    expect(names.length).toBeGreaterThanOrEqual(5);
    expect(names.sort()).toEqual(Object.keys(EXPECT).sort());
  });

  it("each example runs and prints what it should", async () => {
    for (const ex of await examples()) {
      const file = join(scripts, `${ex.name}.mjs`);
      await writeFile(file, ex.code);
      const env = { PATH: process.env.PATH, HOME: work, XDG_CACHE_HOME: join(work, "cache"), REGISTRY: reg.host };
      let r: { stdout: string; stderr: string };
      try {
        r = await pexec(process.execPath, [file], { cwd: scripts, env, maxBuffer: 16 << 20 });
      } catch (e) {
        const x = e as { stdout?: string; stderr?: string; message: string };
        throw new Error(`example ${ex.name} failed: ${x.message}\n${x.stdout ?? ""}\n${x.stderr ?? ""}`);
      }
      await EXPECT[ex.name]!(r.stdout, reg);
    }
  }, 240_000);
});

describe.skipIf(!isRoot)("library API in process (needs root for overlay roots)", () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-lib-"));
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function context(name: string, dockerfile: string): Promise<string> {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    await writeFile(join(dir, "f.txt"), "f\n");
    return dir;
  }

  it("buildEvents: the iterator and onEvent see the same valid events; result resolves after them", async () => {
    const dir = await context("ok", "FROM scratch\nENV A=1\nCOPY f.txt /f\nWORKDIR /w\n");
    const fromCallback: BuildEvent[] = [];
    const { events, result } = buildEvents({ context: dir, push: false, cacheDir: join(work, "cache"), onEvent: (e) => fromCallback.push(e) });
    const fromIterator: BuildEvent[] = [];
    for await (const e of events) fromIterator.push(e);
    const r = await result;
    expect(fromIterator).toEqual(fromCallback);
    for (const e of fromIterator) expect(validateEvent(e)).toEqual([]);
    expect(fromIterator.filter((e) => e.type === "step-end").map((e) => (e as { instruction: string }).instruction)).toEqual(["ENV A=1", "COPY f.txt /f", "WORKDIR /w"]);
    const last = fromIterator[fromIterator.length - 1]!;
    expect(last).toEqual({ type: "result", digest: r.digest, references: [], size: r.size });
    expect(r.steps).toHaveLength(3);
  });

  it("a failed build ends the iterator with an error event and rejects with the coded error", async () => {
    const dir = await context("bad", "FROM scratch\nCOPY missing.txt /x\n");
    const { events, result } = buildEvents({ context: dir, push: false, cacheDir: join(work, "cache") });
    const seen: BuildEvent[] = [];
    for await (const e of events) seen.push(e);
    const err = await result.catch((e: unknown) => e);
    expect(isOcibuildError(err)).toBe(true);
    expect(seen[seen.length - 1]).toEqual({ type: "error", code: (err as { code: string }).code, message: (err as Error).message });
    expect(validateEvent(seen[seen.length - 1])).toEqual([]);
  });

  it("the validator rejects what the types forbid", () => {
    expect(validateEvent({ type: "step-end", stage: "s", step: 1, total: 1, instruction: "RUN x", line: 1, cached: "yes", seconds: 1, layer: null })).toEqual([
      'step-end: field "cached" should be boolean, got "yes"',
    ]);
    expect(validateEvent({ type: "push", reference: "r", digest: "d", status: "sent", size: 1 })[0]).toMatch(/status/);
    expect(validateEvent({ type: "log", level: "info" })).toEqual(['log: missing field "message"']);
    expect(validateEvent({ type: "log", level: "info", message: "m", extra: 1 })).toEqual(['log: unknown field "extra"']);
    expect(validateEvent({ type: "nope" })).toEqual(['unknown event type "nope"']);
  });
});
