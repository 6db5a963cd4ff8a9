/**
 * The remote BuildKit executor against a real buildkitd (OCI/runc worker, unix
 * socket, its own root) and a real registry: the busybox multi-stage build gives
 * the same files, modes and owners as the bubblewrap executor; RUN output reaches
 * the progress events; a failing RUN names its Dockerfile line and exit code; a
 * rebuild is fully cached without one call to the daemon; `buildkit info` lists
 * the daemon's platforms.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, type BuildResult } from "../../src/builder/build.js";
import type { BuildEvent } from "../../src/builder/events.js";
import { BuildkitExecutor, type RemoteMount } from "../../src/builder/sandbox/buildkit.js";
import { imageState } from "../../src/builder/base.js";
import { readTar } from "../../src/builder/rootfs-tar.js";
import type { StageState } from "../../src/builder/stage-state.js";
import { OciLayout } from "../../src/oci/layout.js";
import { RegistryClient, hostPlatform } from "../../src/oci/registry/index.js";
import { createGunzip } from "node:zlib";
import { buildkitCommand } from "../../src/cli/commands/buildkit.js";
import { OcibuildError } from "../../src/errors.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { captureIO } from "../dockerfile/cli-io.js";
import { buildkitdMissing, makeClientCert, startBuildkitd, type TestBuildkitd } from "../helpers/buildkitd.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, run } from "../helpers/tools.js";
import { haveHtpasswd, haveOpenssl, htpasswdConfig, makeCA, makeHtpasswd, writeDockerConfig, type TestCA } from "../helpers/registry-tls.js";
import { EXECUTOR_FLAGS, executorFrom } from "../../src/cli/commands/buildkit.js";
import { parseFlags } from "../../src/cli/flags.js";

const MULTISTAGE = resolve(__dirname, "../../testdata/multistage");
const missing = buildkitdMissing() ?? (!haveRegistry() ? "docker-registry is not installed" : undefined) ?? (!haveHtpasswd() ? "htpasswd is not installed" : undefined) ?? (!have("bwrap") ? "bwrap is not installed" : undefined) ?? (!have("skopeo") || !have("umoci") ? "skopeo and umoci are needed to unpack images" : undefined);

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
  let reg: TestRegistry;
  let bk: TestBuildkitd;
  let work: string;
  let base: string;
  let staging: string;

  let authReg: TestRegistry;
  let authConfig: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-bk-"));
    reg = await startRegistry();
    // A second registry that needs a login, for credentials passed over the session.
    await mkdir(join(work, "auth"));
    authReg = await startRegistry({ extraConfig: htpasswdConfig(await makeHtpasswd(join(work, "auth"), { ci: "s3cret" })) });
    authConfig = await writeDockerConfig(join(work, "auth"), { [authReg.host]: { username: "ci", password: "s3cret" } });
    bk = await startBuildkitd({ insecureRegistries: [reg.host, authReg.host] });
    base = `${reg.host}/base/busybox:latest`;
    staging = `${reg.host}/ci/staging`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "base-cache") });
  }, 300_000);
  afterAll(async () => {
    await bk?.stop();
    await reg?.stop();
    await authReg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  const executor = () => new BuildkitExecutor({ address: bk.address, stagingRepo: staging });

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

  it("RUN output reaches the progress events, stdout and stderr apart", async () => {
    const ctx = join(work, "ctx-output");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo "out: hello from buildkit" && echo "err: to stderr" >&2 && echo made > /made\nRUN true\n`);
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-output"), executor: ex, onEvent: (e) => events.push(e) });
      expect(r.steps.map((st) => st.instruction)).toEqual([expect.stringContaining("RUN echo"), "RUN true"]);
      expect(r.steps[0]!.layer).toMatch(/^sha256:/);
      // A command that changes nothing adds no layer (as with bubblewrap).
      expect(r.steps[1]!.layer).toBeNull();
      expect(r.image.layers.length).toBe(2);
    } finally {
      ex.close();
    }
    const text = (stream: string) => events.filter((e): e is Extract<BuildEvent, { type: "output" }> => e.type === "output" && e.stream === stream).map((e) => e.text).join("");
    expect(text("stdout")).toContain("out: hello from buildkit");
    expect(text("stderr")).toContain("err: to stderr");
    expect(events.some((e) => e.type === "output" && e.step === 1)).toBe(true);
    expect(events.some((e) => e.type === "output" && e.step === 2)).toBe(false);
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
        expect(r.steps[0]!.cached).toBe(false);
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

  it("the daemon gets ocibuild's registry credentials over the session (a staging repo that needs a login)", async () => {
    const ctx = join(work, "ctx-auth");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo private > /private\n`);
    const stagingRepo = `${authReg.host}/ci/staging`;
    const ok = new BuildkitExecutor({ address: bk.address, stagingRepo, credentials: { authConfigPath: authConfig } });
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-auth"), executor: ok, registry: { authConfigPath: authConfig } });
      expect(r.steps[0]!.layer).toMatch(/^sha256:/);
    } finally {
      ok.close();
    }
    // The same build when the daemon is given no credentials: the daemon is refused, and says so.
    await writeFile(join(work, "auth", "empty.json"), "{}");
    const anon = new BuildkitExecutor({ address: bk.address, stagingRepo, credentials: { authConfigPath: join(work, "auth", "empty.json") } });
    let err: unknown;
    try {
      await build({ context: ctx, cacheDir: join(work, "cache-auth-anon"), executor: anon, registry: { authConfigPath: authConfig } });
    } catch (e) {
      err = e;
    } finally {
      anon.close();
    }
    expect((err as OcibuildError).code).toBe("BUILDKIT_SOLVE_FAILED");
    expect((err as OcibuildError).message).toMatch(/401|unauthori[sz]ed/i);
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

  it("a RUN heredoc runs on the daemon; one with a #! line (a script mount) is refused by name", async () => {
    const ctx = join(work, "ctx-heredoc");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN <<EOT\necho "from a heredoc" > /heredoc\ncat /heredoc\nEOT\n`);
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-heredoc"), executor: ex, onEvent: (e) => events.push(e) });
      expect(r.steps[0]!.layer).toMatch(/^sha256:/);
      await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN <<EOT\n#!/bin/sh\necho script\nEOT\n`);
      await expect(build({ context: ctx, cacheDir: join(work, "cache-heredoc"), executor: ex })).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED", line: 2 });
    } finally {
      ex.close();
    }
    expect(events.filter((e) => e.type === "output").map((e) => (e as { text: string }).text).join("")).toContain("from a heredoc");
  }, 180_000);

  describe("RUN mounts on the daemon (secret over the session, cache, tmpfs)", () => {
    let content: OciLayout;
    let registry: RegistryClient;
    let state: StageState;
    beforeAll(async () => {
      content = await OciLayout.create(join(work, "mounts-content"));
      registry = new RegistryClient({});
      state = await imageState(base, hostPlatform(), registry);
    });
    afterAll(async () => {
      await registry?.close();
    });

    const mounts: RemoteMount[] = [
      { type: "secret", id: "token", target: "/run/secrets/token", required: true, mode: 0o400, uid: 0, gid: 0 },
      { type: "secret", id: "token", env: "TOKEN_ENV", required: true, mode: 0o400, uid: 0, gid: 0 },
      { type: "cache", target: "/var/cache/app", id: "app-cache", sharing: "locked", source: "/", mode: 0o755, uid: 0, gid: 0, readonly: false },
      { type: "tmpfs", target: "/scratch" },
    ];
    const script = [
      'echo "file=$(cat /run/secrets/token) env=$TOKEN_ENV"',
      'echo "runs=$(echo x >> /var/cache/app/runs && wc -l < /var/cache/app/runs)"',
      'echo "scratch=$(grep " /scratch " /proc/mounts | cut -d" " -f3)"',
      "echo kept > /kept && echo tmp > /scratch/tmp",
    ].join(" && ");
    const runStep = async (ex: BuildkitExecutor, secrets: Map<string, Buffer>, env: string[] = []) => {
      const out: string[] = [];
      const r = await ex.runRemote({
        state, args: ["/bin/sh", "-c", script], env, cwd: "/", user: "", network: "default", description: "RUN --mount test",
        content, registry, mounts, secrets, onOutput: (_s, c) => out.push(c.toString()),
      });
      return { r, out: out.join("") };
    };

    it("gives the command the secret (file and env), a persistent cache and a tmpfs, and keeps all three out of the layer", async () => {
      const ex = executor();
      try {
        const secret = "s3cr3t-" + Math.random().toString(36).slice(2);
        const first = await runStep(ex, new Map([["token", Buffer.from(secret)]]));
        expect(first.r.exitCode).toBe(0);
        expect(first.out).toContain(`file=${secret} env=${secret}`);
        expect(first.out).toContain("runs=1");
        expect(first.out).toContain("scratch=tmpfs");
        // Another step (a different env) with the same cache id sees what the first left there.
        const second = await runStep(ex, new Map([["token", Buffer.from(secret)]]), ["ROUND=2"]);
        expect(second.out).toContain("runs=2");
        // The layer: /kept, and nothing of the mounts (nor their mount points).
        const layer = first.r.layer!;
        const paths: string[] = [];
        for await (const e of readTar(content.readBlob(layer.descriptor.digest).pipe(createGunzip()) as AsyncIterable<Buffer>)) {
          paths.push(e.header.name.replace(/\/$/, ""));
          for await (const chunk of e.body) expect(chunk.toString("latin1")).not.toContain(secret);
        }
        expect(paths).toContain("kept");
        expect(paths.filter((p) => /^(run|var|scratch)(\/|$)/.test(p))).toEqual([]);
      } finally {
        ex.close();
      }
    }, 180_000);

    it("a missing required secret fails before the daemon is asked; bind and ssh mounts are refused by name", async () => {
      const ex = executor();
      try {
        await expect(runStep(ex, new Map())).rejects.toMatchObject({ code: "BUILDKIT_SECRET_MISSING" });
        await expect(
          ex.runRemote({ state, args: ["true"], env: [], cwd: "/", user: "", network: "default", description: "RUN", content, registry, mounts: [{ type: "bind", target: "/src" }] }),
        ).rejects.toMatchObject({ code: "BUILDKIT_MOUNT_UNSUPPORTED" });
        expect(ex.calls).toBe(0);
      } finally {
        ex.close();
      }
    });
  });

  it("a Dockerfile's RUN --mount=type=secret/cache/tmpfs runs on the daemon; bind mounts and missing secrets fail at their line", async () => {
    const ctx = join(work, "ctx-dfmounts");
    await mkdir(ctx, { recursive: true });
    const secretFile = join(work, "secret.txt");
    const secret = "df-secret-" + Math.random().toString(36).slice(2);
    await writeFile(secretFile, secret);
    await writeFile(
      join(ctx, "Dockerfile"),
      `FROM ${base}\nRUN --mount=type=secret,id=token,required=true --mount=type=cache,target=/var/cache/x --mount=type=tmpfs,target=/t \\\n    test "$(cat /run/secrets/token)" = "${secret}" && echo secret-ok && echo made > /made\n`,
    );
    const events: BuildEvent[] = [];
    const ex = executor();
    try {
      const r = await build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, secrets: [{ id: "token", src: secretFile }], onEvent: (e) => events.push(e) });
      expect(r.steps[0]!.layer).toMatch(/^sha256:/);
      expect(events.some((e) => e.type === "output" && e.text.includes("secret-ok"))).toBe(true);
      // --no-cache runs it on the daemon again, even with a cache mount (which keeps its content).
      const again: BuildEvent[] = [];
      await build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, noCache: true, secrets: [{ id: "token", src: secretFile }], onEvent: (e) => again.push(e) });
      expect(again.some((e) => e.type === "output" && e.text.includes("secret-ok"))).toBe(true);
      // Without the secret: the step fails at its line, before the daemon runs anything.
      await expect(build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex, noCache: true })).rejects.toMatchObject({ code: "BUILDKIT_SECRET_MISSING", line: 2 });
      await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN echo one\nRUN --mount=type=bind,target=/src true\n`);
      await expect(build({ context: ctx, cacheDir: join(work, "cache-dfmounts"), executor: ex })).rejects.toMatchObject({ code: "BUILD_UNSUPPORTED", line: 3 });
    } finally {
      ex.close();
    }
  }, 180_000);

  it("a platform the daemon's workers cannot run fails clearly", async () => {
    const ex = executor();
    try {
      const other = hostPlatform().architecture === "s390x" ? "ppc64le" : "s390x";
      await expect(
        ex.runRemote({
          state: { platform: { os: "linux", architecture: other }, config: {}, layers: [], history: [], args: {}, baseName: "scratch" },
          args: ["/bin/true"],
          env: [],
          cwd: "/",
          user: "",
          network: "default",
          description: "RUN true",
          content: undefined as never,
          registry: undefined as never,
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

const tlsMissing = buildkitdMissing() ?? (haveOpenssl() ? undefined : "openssl is not installed");
describe.skipIf(tlsMissing !== undefined)(`BuildKit over tcp:// with mutual TLS (${tlsMissing ?? "needs buildkitd, runc, root, openssl"})`, () => {
  let bk: TestBuildkitd;
  let dir: string;
  let ca: TestCA;
  let client: { cert: string; key: string };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-bk-tls-"));
    ca = await makeCA(dir);
    client = await makeClientCert(dir, ca);
    bk = await startBuildkitd({
      insecureRegistries: [],
      tls: { cert: ca.serverCert, key: ca.serverKey, ca: ca.caCert },
      clientTls: { ca: ca.caCert, cert: client.cert, key: client.key },
    });
  }, 120_000);
  afterAll(async () => {
    await bk?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("`buildkit info` connects with --buildkit-ca/--buildkit-cert/--buildkit-key", async () => {
    const cap = captureIO();
    const code = await buildkitCommand(["info", "--buildkit-addr", bk.address, "--buildkit-ca", ca.caCert, "--buildkit-cert", client.cert, "--buildkit-key", client.key], cap.io, new AbortController().signal);
    expect(cap.stderr()).toBe("");
    expect(code).toBe(0);
    expect(cap.stdout()).toMatch(/platforms: .*linux\//);
  });

  it("without a client certificate the daemon refuses the connection, and the error says where", async () => {
    const ex = new BuildkitExecutor({ address: bk.address, ca: ca.caCert, stagingRepo: "127.0.0.1:1/x" });
    try {
      const err = await ex.info().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OcibuildError);
      expect((err as OcibuildError).code).toBe("BUILDKIT_TLS");
      expect((err as OcibuildError).message).toContain(bk.address);
    } finally {
      ex.close();
    }
  });
});
