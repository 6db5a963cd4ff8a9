/**
 * The remote BuildKit executor against a real buildkitd (OCI/runc worker, unix
 * socket, its own root) and a real registry: the busybox multi-stage build gives
 * the same files, modes and owners as the bubblewrap executor; RUN output reaches
 * the progress events; a failing RUN names its Dockerfile line and exit code; a
 * rebuild is fully cached without one call to the daemon; `buildkit info` lists
 * the daemon's platforms. (Session, mounts, TLS: buildkit-features.test.ts.)
 */
import { lstat, mkdir, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { build, type BuildResult } from "../../src/builder/build.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { BuildkitExecutor } from "../../src/builder/sandbox/buildkit.js";
import { EXECUTOR_FLAGS, buildkitCommand, executorFrom } from "../../src/cli/commands/buildkit.js";
import { parseFlags } from "../../src/cli/flags.js";
import { OcibuildError } from "../../src/errors.js";
import { hostPlatform } from "../../src/oci/platform.js";
import { captureIO } from "../dockerfile/cli-io.js";
import { buildkitdMissing, startBuildkitFixture, type BuildkitFixture, type TestBuildkitd } from "../helpers/buildkitd.js";
import { haveRegistry, type TestRegistry } from "../helpers/registry.js";
import { haveHtpasswd } from "../helpers/registry-tls.js";
import { have, run } from "../helpers/tools.js";

const MULTISTAGE = resolve(__dirname, "../../testdata/multistage");
const missing =
  buildkitdMissing() ??
  (!haveRegistry() ? "docker-registry is not installed" : undefined) ??
  (!haveHtpasswd() ? "htpasswd is not installed" : undefined) ??
  (!have("bwrap") ? "bwrap is not installed" : undefined) ??
  (!have("skopeo") || !have("umoci") ? "skopeo and umoci are needed to unpack images" : undefined);

interface Entry {
  path: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  link?: string;
}

/** Every path of an unpacked root with its type, permission bits, owner and link target. */
async function listTree(root: string, rel = ""): Promise<Entry[]> {
  const out: Entry[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(root, p));
    const type = st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : st.isFile() ? "file" : "other";
    const e: Entry = { path: p, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    if (type === "symlink") e.link = await readlink(join(root, p));
    out.push(e);
    if (type === "dir") out.push(...(await listTree(root, p)));
  }
  return out;
}

describe.skipIf(missing !== undefined)(`remote BuildKit executor against a real buildkitd (${missing ?? "needs buildkitd, runc, root, docker-registry, bwrap, skopeo, umoci"})`, () => {
  let fx: BuildkitFixture;
  let work: string;
  let reg: TestRegistry;
  let bk: TestBuildkitd;
  let base: string;
  let staging: string;
  let authReg: TestRegistry;
  let authConfig: string;

  beforeAll(async () => {
    fx = await startBuildkitFixture();
    ({ work, reg, bk, base, staging, authReg, authConfig } = fx);
  }, 300_000);
  afterAll(async () => {
    await fx?.stop();
  });

  const executor = () => fx.executor();

  async function unpack(ref: string, name: string): Promise<string> {
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${join(work, name)}:v1`]);
    await run("umoci", ["unpack", "--image", `${join(work, name)}:v1`, join(work, `${name}-bundle`)]);
    return join(work, `${name}-bundle`, "rootfs");
  }

  describe("the busybox multi-stage build", () => {
    let viaBuildkit: BuildResult;
    let viaBwrap: BuildResult;
    let ex: BuildkitExecutor;
    const bkCache = () => join(work, "cache-bk");

    beforeAll(async () => {
      // The executor as `ocibuild build --executor buildkit ...` makes it from its flags.
      const flags = parseFlags(["--executor", "buildkit", "--buildkit-addr", bk.address, "--buildkit-staging-repo", staging], EXECUTOR_FLAGS);
      ex = executorFrom(flags, captureIO().io)!;
      expect(ex).toBeInstanceOf(BuildkitExecutor);
      try {
        viaBuildkit = await build({ context: MULTISTAGE, buildArgs: { BASE: base }, tags: [`${reg.host}/test/ms:buildkit`], cacheDir: bkCache(), executor: ex });
      } finally {
        ex.close();
      }
      viaBwrap = await build({ context: MULTISTAGE, buildArgs: { BASE: base }, tags: [`${reg.host}/test/ms:bwrap`], cacheDir: join(work, "cache-bwrap") });
    }, 600_000);

    it("ran its RUN steps on the daemon", () => {
      expect(ex.calls).toBeGreaterThan(0);
      const runs = viaBuildkit.steps.filter((s) => s.instruction.startsWith("RUN"));
      expect(runs.length).toBe(4);
      expect(runs.every((s) => !s.cached)).toBe(true);
    });

    it("gives the same file list, modes and owners as the bubblewrap executor", async () => {
      const rootA = await unpack(`${reg.host}/test/ms:buildkit`, "bk");
      const rootB = await unpack(`${reg.host}/test/ms:bwrap`, "bw");
      const a = await listTree(rootA);
      const b = await listTree(rootB);
      // What the RUN as USER app saw (uid, gid, groups, HOME, cwd) is the same too.
      for (const f of ["uid", "gid", "groups", "home", "cwd"]) {
        const got = await readFile(join(rootA, "home/app/work", f), "utf8");
        expect(got, f).toBe(await readFile(join(rootB, "home/app/work", f), "utf8"));
      }
      expect(await readFile(join(rootA, "home/app/work/home"), "utf8")).toBe("/home/app\n");
      // Sanity: the trees hold what the Dockerfile made, so an equality of two empty lists cannot pass.
      expect(a.find((e) => e.path === "home/app/work/made-by-app")).toMatchObject({ uid: 1000, gid: 1000 });
      expect(a.find((e) => e.path === "opt/hello/link")).toMatchObject({ type: "symlink", link: "greeting" });
      expect(a.some((e) => e.path === "bin/vi")).toBe(false);
      const fmt = (e: Entry) => `${e.path} ${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}${e.link ? ` -> ${e.link}` : ""}`;
      expect(a.map(fmt)).toEqual(b.map(fmt));
    }, 120_000);

    it("a second build is fully cached and makes no call to the daemon", async () => {
      const again = executor();
      try {
        const r = await build({ context: MULTISTAGE, buildArgs: { BASE: base }, tags: [`${reg.host}/test/ms:buildkit2`], cacheDir: bkCache(), executor: again });
        expect(r.steps.length).toBeGreaterThan(0);
        expect(r.steps.filter((s) => !s.cached)).toEqual([]);
        expect(r.digest).toBe(viaBuildkit.digest);
        expect(again.calls).toBe(0);
      } finally {
        again.close();
      }
      // And with no daemon at all behind the address: still fully cached, still the same image.
      const nowhere = new BuildkitExecutor({ address: `unix://${join(work, "no-daemon.sock")}`, stagingRepo: staging });
      try {
        const r = await build({ context: MULTISTAGE, buildArgs: { BASE: base }, cacheDir: bkCache(), executor: nowhere });
        expect(r.steps.every((s) => s.cached)).toBe(true);
        expect(r.digest).toBe(viaBuildkit.digest);
        expect(nowhere.calls).toBe(0);
      } finally {
        nowhere.close();
      }
    }, 120_000);
  });

  it("the CLI runs every RUN step on the daemon: ocibuild --executor buildkit --buildkit-addr ADDR", async () => {
    const cap = captureIO({ cwd: work });
    cap.io.env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const code = await main(
      ["--executor", "buildkit", "--buildkit-addr", bk.address, "--buildkit-staging-repo", staging, "-t", `${reg.host}/test/ms:cli`, "--build-arg", `BASE=${base}`, "--cache-dir", join(work, "cache-cli"), "--progress", "json", MULTISTAGE],
      cap.io,
    );
    expect(cap.stderr()).not.toMatch(/error\[/);
    expect(code).toBe(0);
    const events = cap.stdout().trim().split("\n").map((l) => JSON.parse(l));
    // The build stage's RUN ran remotely: the daemon's own progress appears as log lines, and the output of uname came back.
    expect(events.some((e) => e.type === "log" && /buildkit|daemon|solve/i.test(e.message))).toBe(true);
    expect(events.filter((e) => e.type === "step-end" && e.instruction.startsWith("RUN")).every((e) => e.cached === false)).toBe(true);
    const root = await unpack(`${reg.host}/test/ms:cli`, "cli");
    expect(await readFile(join(root, "opt/hello/greeting"), "utf8")).toBe("hello from a multi-stage build\n");
  }, 600_000);

  it("RUN output reaches the progress events, stdout and stderr apart", async () => {
    const ctx = join(work, "ctx-output");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo "out: hello from buildkit" && echo "err: to stderr" >&2 && echo made > /made\nRUN true\n`);
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-output"), executor: ex, onEvent: (e) => events.push(e) });
      // Step 1 is FROM (the base a step of its own); the RUN steps are 2 and 3.
      expect(r.steps.map((st) => st.instruction)).toEqual([`FROM ${base}`, expect.stringContaining("RUN echo"), "RUN true"]);
      expect(r.steps[1]!.layer).toMatch(/^sha256:/);
      // A command that changes nothing adds no layer (as with bubblewrap).
      expect(r.steps[2]!.layer).toBeNull();
      expect(r.image.layers.length).toBe(2);
    } finally {
      ex.close();
    }
    const text = (stream: string) => events.filter((e): e is Extract<BuildEvent, { type: "output" }> => e.type === "output" && e.stream === stream).map((e) => e.text).join("");
    expect(text("stdout")).toContain("out: hello from buildkit");
    expect(text("stderr")).toContain("err: to stderr");
    expect(events.some((e) => e.type === "output" && e.step === 2)).toBe(true);
    expect(events.some((e) => e.type === "output" && e.step === 3)).toBe(false);
    // The daemon's own work shows up as log lines.
    const logs = events.filter((e): e is Extract<BuildEvent, { type: "log" }> => e.type === "log").map((e) => e.message);
    expect(logs.some((m) => /^buildkit: export/i.test(m))).toBe(true);
  }, 180_000);

  it("--no-cache runs the command on the daemon again: the daemon's own cache never answers for ours", async () => {
    const ctx = join(work, "ctx-nocache");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo "ran: $(cat /proc/sys/kernel/random/uuid)" && touch /x\n`);
    const runOnce = async (noCache: boolean) => {
      const out: string[] = [];
      const ex = executor();
      try {
        const r = await build({ context: ctx, cacheDir: join(work, "cache-nocache"), executor: ex, noCache, onEvent: (e) => e.type === "output" && out.push(e.text) });
        expect(r.steps[1]!.cached).toBe(false);
      } finally {
        ex.close();
      }
      return out.join("");
    };
    const first = await runOnce(false);
    const second = await runOnce(true);
    expect(first).toMatch(/ran: [0-9a-f-]{36}/);
    expect(second).toMatch(/ran: [0-9a-f-]{36}/);
    expect(second).not.toBe(first);
  }, 180_000);

  it("a failing RUN reports the Dockerfile line, the command and the exit code", async () => {
    const ctx = join(work, "ctx-fail");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo fine\nRUN echo "about to fail" && exit 7\nRUN echo never\n`);
    const ex = executor();
    let err: unknown;
    try {
      await build({ context: ctx, cacheDir: join(work, "cache-fail"), executor: ex });
    } catch (e) {
      err = e;
    } finally {
      ex.close();
    }
    expect(err).toBeInstanceOf(OcibuildError);
    const e = err as OcibuildError;
    expect(e.code).toBe("BUILD_RUN_FAILED");
    expect(e.line).toBe(3);
    expect(e.message).toContain("exit code 7");
    expect(e.message).toContain('echo "about to fail" && exit 7');
    expect(e.message).toContain("about to fail");
  }, 180_000);

  it("cancelling the build cancels the daemon's solve (the command stops)", async () => {
    const ctx = join(work, "ctx-abort");
    await mkdir(ctx, { recursive: true });
    const marker = `sleep ${4000 + Math.floor(Math.random() * 999)}`;
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo started && ${marker}\n`);
    const ac = new AbortController();
    const ex = executor();
    let err: unknown;
    try {
      await build({
        context: ctx,
        cacheDir: join(work, "cache-abort"),
        executor: ex,
        signal: ac.signal,
        onEvent: (e) => {
          if (e.type === "output" && e.text.includes("started")) ac.abort();
        },
      });
    } catch (e) {
      err = e;
    } finally {
      ex.close();
    }
    expect(ac.signal.aborted).toBe(true);
    expect((err as OcibuildError).code).toMatch(/ABORTED$/);
    // The daemon kills the container once its solve is cancelled: wait for the process to go.
    const running = async () => (await run("ps", ["-eo", "args"])).stdout.split("\n").some((l) => l.trim() === marker);
    for (let i = 0; i < 100 && (await running()); i++) await new Promise((r) => setTimeout(r, 200));
    expect(await running()).toBe(false);
  }, 180_000);

  it("a platform the daemon's workers cannot run fails clearly", async () => {
    const ex = executor();
    try {
      const other = hostPlatform().architecture === "s390x" ? "ppc64le" : "s390x";
      await expect(
        ex.run({
          state: { platform: { os: "linux", architecture: other }, config: {}, layers: [], history: [], args: {}, baseName: "scratch" },
          args: ["/bin/true"],
          env: [],
          cwd: "/",
          network: "default",
          privileged: false,
          description: "RUN true",
          ctx: { content: undefined as never, registry: undefined as never, secrets: new Map(), emit: () => {} },
        }),
      ).rejects.toMatchObject({ code: "BUILDKIT_PLATFORM_UNSUPPORTED" });
    } finally {
      ex.close();
    }
  });

  it("`ocibuild buildkit info` lists the daemon's version, workers and platforms", async () => {
    const cap = captureIO();
    const code = await buildkitCommand(["info", "--buildkit-addr", bk.address], cap.io, new AbortController().signal);
    expect(code).toBe(0);
    const out = cap.stdout();
    expect(out).toContain(`daemon:   ${bk.address}`);
    expect(out).toMatch(/worker: +\S+/);
    const host = hostPlatform();
    expect(out).toMatch(new RegExp(`platforms: .*linux/${host.architecture}`));
    const json = captureIO();
    json.io.env = { BUILDKIT_HOST: bk.address };
    expect(await buildkitCommand(["info", "--json"], json.io, new AbortController().signal)).toBe(0);
    const parsed = JSON.parse(json.stdout());
    expect(parsed.workers[0].platforms.some((p: { os: string; architecture: string }) => p.os === "linux" && p.architecture === host.architecture)).toBe(true);
    expect(parsed.version.version).toMatch(/^v?\d+\.\d+\.\d+/);
  });
});
