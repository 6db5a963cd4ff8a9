/**
 * Same image as BuildKit: small Dockerfiles where ocibuild's image once differed
 * from BuildKit's, each built by ocibuild (in both snapshot modes where the
 * snapshot matters) and checked against the result BuildKit gives. Where a
 * buildkitd and buildctl are installed (the project's hand-built peer), the same
 * Dockerfile is also built by BuildKit and the two trees are compared file by
 * file (type, mode, owner, link target, content).
 */
import { execFile } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { buildkitdMissing, startBuildkitd, type TestBuildkitd } from "../helpers/buildkitd.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { describeTree, treeDifferences } from "../helpers/tree.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci");
const peerMissing = buildkitdMissing() ?? (have("buildctl") ? undefined : "buildctl is not installed");

interface ParityCase {
  name: string;
  dockerfile: string;
  /** Context files (path -> content); directories end with "/". */
  files?: Record<string, string>;
  /** Build in both snapshot modes (overlay and copy-and-compare). */
  bothModes?: boolean;
  /** Anything else the context needs (modes, archives), after the files are written. */
  prepare?(ctx: string): Promise<void>;
  /** Checks on the unpacked root filesystem: what BuildKit gives. */
  check(root: string): Promise<void>;
}

const CASES: ParityCase[] = [
  {
    name: "rewrite-keeping-size-and-mtime",
    bothModes: true,
    // cp -p rewrites /a with the same size and the same (whole-second) mtime.
    dockerfile: `ARG BASE\nFROM \${BASE}\nRUN printf aaaa > /a && printf bbbb > /b && touch -d @1000000000 /a /b\nRUN cp -p /b /a\n`,
    async check(root) {
      expect(await readFile(join(root, "a"), "utf8")).toBe("bbbb");
      expect((await lstat(join(root, "a"))).mtimeMs).toBe(1_000_000_000_000);
    },
  },
  {
    name: "copy-dir-keeps-destination-mode",
    // A context of mode 0700 (as mktemp -d makes) and a source directory of 0770.
    dockerfile: `ARG BASE\nFROM \${BASE}\nWORKDIR /app\nCOPY . .\nCOPY sub /d\nRUN mkdir -m 700 /e\nCOPY sub /e\n`,
    files: { "sub/f": "f\n" },
    async prepare(ctx) {
      await chmod(ctx, 0o700);
      await chmod(join(ctx, "sub"), 0o770);
    },
    async check(root) {
      expect(await meta(join(root, "app"))).toBe("0:0 755");
      expect(await meta(join(root, "d"))).toBe("0:0 755");
      expect(await meta(join(root, "e"))).toBe("0:0 700");
      expect(await meta(join(root, "app/sub"))).toBe("0:0 770");
    },
  },
  {
    name: "add-tar-skips-root-entry",
    dockerfile: `ARG BASE\nFROM \${BASE}\nADD root.tar /d8\n`,
    files: { "src/in": "in\n" },
    async prepare(ctx) {
      await chmod(join(ctx, "src"), 0o700);
      await run("tar", ["--owner=1234", "--group=5678", "--numeric-owner", "-cf", join(ctx, "root.tar"), "-C", join(ctx, "src"), "."]);
    },
    async check(root) {
      expect(await meta(join(root, "d8"))).toBe("0:0 755");
      expect(await meta(join(root, "d8/in"))).toBe("1234:5678 644");
    },
  },
  {
    name: "wildcard-matching-nothing-is-dropped",
    dockerfile: `ARG BASE\nFROM \${BASE}\nCOPY nomatch* a /one\nCOPY nomatch* a /two/\n`,
    files: { a: "A\n" },
    async check(root) {
      expect(await readFile(join(root, "one"), "utf8")).toBe("A\n");
      expect(await readFile(join(root, "two/a"), "utf8")).toBe("A\n");
    },
  },
  {
    name: "args-carry-into-a-stage-built-from-a-stage",
    dockerfile: `ARG BASE\nFROM \${BASE} AS base\nARG NAME=base\nFROM base\nARG N2="$NAME-dev"\nRUN echo "[$NAME] [$N2]" > /out\n`,
    async check(root) {
      expect(await readFile(join(root, "out"), "utf8")).toBe("[base] [base-dev]\n");
    },
  },
  {
    name: "root-without-passwd",
    dockerfile: `FROM scratch\nUSER root\nWORKDIR /w\nCOPY --chown=root:root a /a\nUSER 9999\nWORKDIR /w2\n`,
    files: { a: "A\n" },
    async check(root) {
      expect(await meta(join(root, "w"))).toBe("0:0 755");
      expect(await meta(join(root, "a"))).toBe("0:0 644");
      expect(await meta(join(root, "w2"))).toBe("9999:9999 755");
    },
  },
];

async function meta(path: string): Promise<string> {
  const st = await lstat(path);
  return `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;
}

async function writeContext(dir: string, c: ParityCase): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "Dockerfile"), c.dockerfile);
  for (const [p, content] of Object.entries(c.files ?? {})) {
    if (p.endsWith("/")) await mkdir(join(dir, p), { recursive: true });
    else {
      await mkdir(join(dir, p, ".."), { recursive: true });
      await writeFile(join(dir, p), content);
    }
  }
  await c.prepare?.(dir);
}

describe.skipIf(!ready)("same image as BuildKit (needs root, bwrap, docker-registry, umoci)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let bk: TestBuildkitd | undefined;

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-parity-"));
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    if (peerMissing === undefined) bk = await startBuildkitd({ insecureRegistries: [reg.host] });
  }, 120_000);
  afterAll(async () => {
    await bk?.stop();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const built = new Map<string, Promise<string>>();
  /** ocibuild's root filesystem for a case (built once per snapshot mode). */
  function ours(c: ParityCase, forceCopy: boolean): Promise<string> {
    const tag = `${c.name}-${forceCopy ? "copy" : "overlay"}`;
    let p = built.get(tag);
    if (p === undefined) built.set(tag, (p = buildOurs(c, forceCopy, tag)));
    return p;
  }

  async function buildOurs(c: ParityCase, forceCopy: boolean, tag: string): Promise<string> {
    const ctx = join(work, "ctx", c.name);
    await writeContext(ctx, c);
    const layout = join(work, "img", tag);
    await build({
      context: ctx,
      buildArgs: { BASE: base },
      cacheDir: join(work, "cache"),
      forceCopySnapshots: forceCopy,
      // Each mode builds every step itself: a hit on the other mode's layer would test nothing.
      noCache: true,
      outputs: [{ type: "oci", dest: layout, tag: "v1" }],
    });
    const bundle = join(work, "bundle", tag);
    await run("umoci", ["unpack", "--image", `${layout}:v1`, bundle]);
    return join(bundle, "rootfs");
  }

  async function theirs(c: ParityCase): Promise<string> {
    const ctx = join(work, "ctx", c.name);
    const archive = join(work, "bk", `${c.name}.tar`);
    await mkdir(join(work, "bk"), { recursive: true });
    await pexec("buildctl", [
      "--addr", bk!.address, "build", "--frontend", "dockerfile.v0",
      "--local", `context=${ctx}`, "--local", `dockerfile=${ctx}`, "--opt", `build-arg:BASE=${base}`,
      // The exporter writes a tar of an OCI layout; the name's tag becomes the
      // manifest's org.opencontainers.image.ref.name, which is how umoci picks an
      // image (its --image takes PATH[:TAG] only, never PATH@DIGEST).
      "--output", `type=oci,dest=${archive},name=parity:v1`,
    ]);
    const layout = join(work, "bk", c.name);
    await mkdir(layout, { recursive: true });
    await run("tar", ["-xf", archive, "-C", layout]);
    const bundle = join(work, "bundle", `${c.name}-buildkit`);
    await run("umoci", ["unpack", "--image", `${layout}:v1`, bundle]);
    return join(bundle, "rootfs");
  }

  for (const c of CASES) {
    for (const forceCopy of c.bothModes ? [false, true] : [false]) {
      it(`${c.name}${c.bothModes ? (forceCopy ? " (copy snapshots)" : " (overlay snapshots)") : ""}`, async () => {
        await c.check(await ours(c, forceCopy));
      }, 120_000);
    }
  }

  describe.skipIf(peerMissing !== undefined)(`compared with a real BuildKit (${peerMissing ?? "needs buildkitd, buildctl, runc"})`, () => {
    for (const c of CASES) {
      it(`${c.name}: the same tree as BuildKit's`, async () => {
        const a = await describeTree(await ours(c, false));
        const b = await describeTree(await theirs(c));
        expect(treeDifferences(a, b, ["ocibuild", "BuildKit"])).toEqual([]);
      }, 240_000);
    }
  });
});
