/**
 * BuildKit's Dockerfile extensions run for real on the busybox base: RUN --mount
 * of every type, secrets that leak nowhere, an ssh agent, --network, --security,
 * heredoc scripts, ADD of a git repository served on loopback, COPY --link.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build, type BuildOptions } from "../../src/builder/build.js";
import { freePort } from "../../src/testing/registry.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci") && have("skopeo") && have("git") && have("ssh-agent");
const SECRET = "s3cr3t-value-7f1d2c9a";

describe.skipIf(!ready)("RUN --mount, secrets, ssh, network, heredocs, ADD git, COPY --link (needs root, bwrap, docker-registry, umoci, skopeo, git, openssh-client)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let cacheDir: string;

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-ext-"));
    cacheDir = join(work, "cache");
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir });
  }, 120_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function context(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
    const dir = join(work, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    for (const [p, c] of Object.entries(files)) {
      await mkdir(dirname(join(dir, p)), { recursive: true });
      await writeFile(join(dir, p), c);
    }
    return dir;
  }

  async function buildUnpack(name: string, dir: string, extra: Partial<BuildOptions> = {}): Promise<string> {
    await build({ context: dir, buildArgs: { BASE: base }, cacheDir, outputs: [{ type: "oci", dest: join(work, `${name}-img`), tag: "v1" }], ...extra });
    await run("umoci", ["unpack", "--image", `${join(work, `${name}-img`)}:v1`, join(work, `${name}-bundle`)]);
    return join(work, `${name}-bundle`, "rootfs");
  }

  it("a cache mount persists across builds and is absent from the image", async () => {
    const dir = await context("cachemount", `ARG BASE\nFROM \${BASE}\nRUN --mount=type=cache,target=/var/cache/app,id=appcache sh -c 'echo run >> /var/cache/app/log; cp /var/cache/app/log /seen'\n`);
    await buildUnpack("cm1", dir, { noCache: true });
    const root = await buildUnpack("cm2", dir, { noCache: true });
    expect(await readFile(join(root, "seen"), "utf8")).toBe("run\nrun\n");
    await expect(stat(join(root, "var/cache/app"))).rejects.toThrow();
  });

  it("sharing=locked serialises two concurrent builds using the same cache mount", async () => {
    const step = (n: string) =>
      `ARG BASE\nFROM \${BASE}\nRUN --mount=type=cache,target=/c,id=locked-test,sharing=locked sh -c 'echo start-${n} >> /c/log; sleep 1; echo end-${n} >> /c/log'\n`;
    const a = await context("locked-a", step("a"));
    const b = await context("locked-b", step("b"));
    await Promise.all([build({ context: a, buildArgs: { BASE: base }, cacheDir, push: false, noCache: true }), build({ context: b, buildArgs: { BASE: base }, cacheDir, push: false, noCache: true })]);
    const reader = await context("locked-read", `ARG BASE\nFROM \${BASE}\nRUN --mount=type=cache,target=/c,id=locked-test,sharing=locked cp /c/log /log\n`);
    const root = await buildUnpack("locked-read", reader, { noCache: true });
    const lines = (await readFile(join(root, "log"), "utf8")).trim().split("\n");
    expect(lines).toHaveLength(4);
    // Never interleaved: each start is followed by its own end.
    expect(lines[1]).toBe(lines[0]!.replace("start", "end"));
    expect(lines[3]).toBe(lines[2]!.replace("start", "end"));
  });

  it("a bind mount from another stage, and a tmpfs with a size", async () => {
    const dir = await context(
      "bindtmpfs",
      `ARG BASE\nFROM \${BASE} AS tools\nRUN mkdir /tools && echo "from the tools stage" > /tools/note\n\nFROM \${BASE}\nRUN --mount=type=bind,from=tools,source=/tools,target=/mnt/tools cat /mnt/tools/note > /copied\nRUN --mount=type=tmpfs,target=/scratch,size=2m sh -c 'echo x > /scratch/f && df -k /scratch | tail -1 | awk "{print \\$2}" > /tmpfs-size'\n`,
    );
    const root = await buildUnpack("bt", dir);
    expect(await readFile(join(root, "copied"), "utf8")).toBe("from the tools stage\n");
    expect((await readFile(join(root, "tmpfs-size"), "utf8")).trim()).toBe("2048");
    await expect(stat(join(root, "mnt/tools"))).rejects.toThrow();
    await expect(stat(join(root, "scratch"))).rejects.toThrow();
  });

  it("a secret is readable in the step and absent from every byte of the image, the cache records and the output", async () => {
    const secretFile = join(work, "secret.txt");
    await writeFile(secretFile, SECRET);
    const dir = await context(
      "secret",
      `ARG BASE\nFROM \${BASE}\nRUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /secret-len\nRUN --mount=type=secret,id=tok,env=TOK,target=/etc/tok,mode=0440,uid=1000 sh -c 'test "$TOK" = "$(cat /etc/tok)" && stat -c "%a %u" /etc/tok > /secret-meta && echo "$TOK" | md5sum > /secret-md5'\n`,
    );
    const ref = `${reg.host}/test/secret:v1`;
    const meta = join(work, "secret-meta.json");
    const r = await cli(["-t", ref, "--secret", `id=tok,src=${secretFile}`, "--build-arg", `BASE=${base}`, "--cache-dir", cacheDir, "--progress", "plain", "--metadata-file", meta, dir]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(`${r.stdout}${r.stderr}`).not.toContain(SECRET);
    expect(await readFile(meta, "utf8")).not.toContain(SECRET);
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${join(work, "secret-img")}:v1`]);
    await run("umoci", ["unpack", "--image", `${join(work, "secret-img")}:v1`, join(work, "secret-bundle")]);
    const root = join(work, "secret-bundle", "rootfs");
    expect((await readFile(join(root, "secret-len"), "utf8")).trim()).toBe(String(SECRET.length));
    expect((await readFile(join(root, "secret-meta"), "utf8")).trim()).toBe("440 1000");
    await expect(stat(join(root, "run/secrets"))).rejects.toThrow();
    await expect(stat(join(root, "etc/tok"))).rejects.toThrow();
    // Every blob, decompressed where gzipped, and every cache record.
    const blobs = join(work, "secret-img", "blobs", "sha256");
    for (const b of await readdir(blobs)) {
      const bytes = await readFile(join(blobs, b));
      const text = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes).toString("latin1") : bytes.toString("latin1");
      expect(text.includes(SECRET), `blob ${b}`).toBe(false);
    }
    const { stdout } = await pexec("grep", ["-rl", SECRET, join(cacheDir, "cache"), join(cacheDir, "mounts")]).catch((e: { stdout: string }) => e);
    expect(stdout).toBe("");
  });

  it("a missing required secret fails naming it", async () => {
    const dir = await context("nosecret", `ARG BASE\nFROM \${BASE}\nRUN --mount=type=secret,id=api_key,required=true cat /run/secrets/api_key\n`);
    const r = await cli(["--no-push", "--build-arg", `BASE=${base}`, "--cache-dir", cacheDir, dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error\[BUILD_SECRET_MISSING\]: Dockerfile:3: secret "api_key" is required/);
  });

  it("an ssh agent from the test is forwarded and listed with ssh-add -l", async () => {
    const keyDir = join(work, "ssh");
    await mkdir(keyDir, { recursive: true });
    await pexec("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ocibuild-test-key", "-f", join(keyDir, "id")]);
    const sock = join(keyDir, "agent.sock");
    const agent: ChildProcess = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    try {
      for (let i = 0; i < 100 && !(await stat(sock).catch(() => null)); i++) await new Promise((r) => setTimeout(r, 20));
      await pexec("ssh-add", [join(keyDir, "id")], { env: { ...process.env, SSH_AUTH_SOCK: sock } });
      // The host's ssh-add with its libraries, as a stage, so busybox can run it.
      const tools: Record<string, string> = {};
      const dir = await context("ssh", `ARG BASE\nFROM scratch AS tools\nCOPY hosttools/ /\n\nFROM \${BASE}\nRUN --mount=type=bind,from=tools,target=/t --mount=type=ssh /t/ld.so --library-path /t/lib /t/ssh-add -l > /keys\n`, tools);
      const { stdout } = await pexec("ldd", ["/usr/bin/ssh-add"]);
      await mkdir(join(dir, "hosttools/lib"), { recursive: true });
      await copyFile("/usr/bin/ssh-add", join(dir, "hosttools/ssh-add"));
      for (const m of stdout.matchAll(/=> (\S+) \(/g)) await copyFile(m[1]!, join(dir, "hosttools/lib", m[1]!.split("/").pop()!));
      const ld = /^\s*(\/\S*ld-linux\S*)/m.exec(stdout)![1]!;
      await copyFile(ld, join(dir, "hosttools/ld.so"));
      const root = await buildUnpack("ssh", dir, { ssh: [{ id: "default", paths: [sock] }] });
      expect(await readFile(join(root, "keys"), "utf8")).toMatch(/^256 SHA256:\S+ ocibuild-test-key \(ED25519\)\n$/);
      await expect(stat(join(root, "run/buildkit"))).rejects.toThrow();
    } finally {
      agent.kill();
    }
  });

  it("the default network and --network=none cannot reach a loopback server the test runs; --network=host can, only with network.host allowed", async () => {
    const server: Server = createServer((_req, res) => res.end("reachable\n"));
    const port = await freePort();
    await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
    try {
      const probe = (flag: string, name: string) => `RUN ${flag}sh -c 'wget -q -O /${name}.txt http://127.0.0.1:${port}/ && echo reached > /${name}-result || echo unreachable > /${name}-result'`;
      const dir = await context("network", `ARG BASE\nFROM \${BASE}\n${probe("", "default")}\n${probe("--network=none ", "none")}\n`);
      const root = await buildUnpack("net", dir, { noCache: true });
      expect(await readFile(join(root, "default-result"), "utf8")).toBe("unreachable\n");
      expect(await readFile(join(root, "none-result"), "utf8")).toBe("unreachable\n");

      const hostDir = await context("network-host", `ARG BASE\nFROM \${BASE}\nRUN true\n${probe("--network=host ", "host")}\n`);
      const refused = await cli(["--no-push", "--build-arg", `BASE=${base}`, "--cache-dir", cacheDir, hostDir]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/error\[BUILD_ENTITLEMENT_REQUIRED\]: Dockerfile:4/);
      const flag = await cli(["--no-push", "--network=host", "--build-arg", `BASE=${base}`, "--cache-dir", cacheDir, dir]);
      expect(flag.code).toBe(2);
      expect(flag.stderr).toMatch(/error\[USAGE_ENTITLEMENT_REQUIRED\]: --network=host needs the network.host entitlement/);
      await expect(build({ context: dir, buildArgs: { BASE: base }, cacheDir, push: false, network: "host" })).rejects.toMatchObject({ code: "BUILD_ENTITLEMENT_REQUIRED" });

      const hostRoot = await buildUnpack("net-host", hostDir, { noCache: true, allow: ["network.host"] });
      expect(await readFile(join(hostRoot, "host.txt"), "utf8")).toBe("reachable\n");
      const flagRoot = await buildUnpack("net-flag", dir, { noCache: true, network: "host", allow: ["network.host"] });
      expect(await readFile(join(flagRoot, "default-result"), "utf8")).toBe("reached\n");
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it("--security=insecure is refused unless allowed, and then has every capability", async () => {
    const dir = await context("insecure", `ARG BASE\nFROM \${BASE}\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n`);
    const refused = await cli(["--no-push", "--build-arg", `BASE=${base}`, "--cache-dir", cacheDir, dir]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/error\[BUILD_ENTITLEMENT_REQUIRED\]: Dockerfile:3/);
    const root = await buildUnpack("insecure", dir, { allow: ["security.insecure"] });
    // Every capability this host can give (its bounding set), not Docker's default set.
    const hostBnd = /CapBnd:\s+([0-9a-f]+)/.exec(await readFile("/proc/self/status", "utf8"))![1]!;
    expect((await readFile(join(root, "caps"), "utf8")).trim()).toBe(`CapEff:\t${hostBnd}`);
    const plain = await context("sandboxed", `ARG BASE\nFROM \${BASE}\nRUN grep CapEff /proc/self/status > /caps\n`);
    const sandboxed = await buildUnpack("sandboxed", plain);
    // Docker's default set: chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap.
    expect((await readFile(join(sandboxed, "caps"), "utf8")).trim()).toBe("CapEff:\t00000000a80425fb");
  });

  it("heredocs: a body runs with the shell, a shebang body under its interpreter, several feed the command", async () => {
    const dir = await context(
      "heredocs",
      [
        "ARG BASE",
        "FROM ${BASE}",
        "RUN <<EOF",
        "echo from-shell > /shell.txt",
        "echo second-line >> /shell.txt",
        "EOF",
        "RUN <<EOF",
        "#!/bin/awk -f",
        'BEGIN { print "awk ran" > "/awk.txt" }',
        "EOF",
        "RUN <<A cat > /a.txt && cat <<-B > /b.txt",
        "alpha",
        "A",
        "\tbeta",
        "B",
        "",
      ].join("\n"),
    );
    const root = await buildUnpack("heredocs", dir);
    expect(await readFile(join(root, "shell.txt"), "utf8")).toBe("from-shell\nsecond-line\n");
    expect(await readFile(join(root, "awk.txt"), "utf8")).toBe("awk ran\n");
    expect(await readFile(join(root, "a.txt"), "utf8")).toBe("alpha\n");
    expect(await readFile(join(root, "b.txt"), "utf8")).toBe("beta\n");
    await expect(stat(join(root, "dev/pipes"))).rejects.toThrow();
  });

  it("ADD of a git repository served on loopback at a tag, with and without --keep-git-dir", async () => {
    const repos = join(work, "repos");
    const repo = join(repos, "app.git");
    const src = join(work, "gitsrc");
    await mkdir(src, { recursive: true });
    const g = (args: string[], cwd = src) => pexec("git", args, { cwd, env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@e", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@e" } });
    await g(["init", "-q", "-b", "main"]);
    await writeFile(join(src, "version.txt"), "1.0\n");
    await mkdir(join(src, "docs"), { recursive: true });
    await writeFile(join(src, "docs/readme.md"), "docs at 1.0\n");
    await g(["add", "."]);
    await g(["commit", "-q", "-m", "v1"]);
    await g(["tag", "v1.0"]);
    await writeFile(join(src, "version.txt"), "2.0\n");
    await g(["commit", "-q", "-am", "v2"]);
    await mkdir(repos, { recursive: true });
    await pexec("git", ["clone", "-q", "--bare", src, repo]);
    const port = await freePort();
    const daemon = spawn("git", ["daemon", "--reuseaddr", "--export-all", `--base-path=${repos}`, "--listen=127.0.0.1", `--port=${port}`, repos], { stdio: "ignore" });
    try {
      await new Promise((r) => setTimeout(r, 500));
      const url = `git://127.0.0.1:${port}/app.git`;
      const dir = await context("git", `ARG BASE\nFROM \${BASE}\nADD ${url}#v1.0 /src/\nADD ${url}#v1.0:docs /docs/\nADD --keep-git-dir=true ${url}#main /full/\n`);
      const root = await buildUnpack("git", dir);
      expect(await readFile(join(root, "src/version.txt"), "utf8")).toBe("1.0\n");
      await expect(stat(join(root, "src/.git"))).rejects.toThrow();
      expect(await readFile(join(root, "docs/readme.md"), "utf8")).toBe("docs at 1.0\n");
      expect(await readFile(join(root, "full/version.txt"), "utf8")).toBe("2.0\n");
      expect((await stat(join(root, "full/.git"))).isDirectory()).toBe(true);
      // A ref the repository does not have fails; it never falls back to the default branch.
      const missing = await context("git-missing", `ARG BASE\nFROM \${BASE}\nADD ${url}#v9.9 /src/\n`);
      await expect(build({ context: missing, buildArgs: { BASE: base }, cacheDir, push: false })).rejects.toMatchObject({ code: "BUILD_GIT_REF_NOT_FOUND", message: expect.stringContaining("v9.9") });
    } finally {
      daemon.kill();
    }
  });

  it("COPY --link makes a layer independent of the base: its cache entry survives a change of base", async () => {
    const dir = await context("link", `ARG BASE\nFROM \${BASE}\nRUN echo v1 > /base-marker\nCOPY --link app.txt /opt/app/\n`, { "app.txt": "linked\n" });
    const first = await build({ context: dir, buildArgs: { BASE: base }, cacheDir, push: false });
    await writeFile(join(dir, "Dockerfile"), `ARG BASE\nFROM \${BASE}\nRUN echo v2 > /base-marker\nCOPY --link app.txt /opt/app/\n`);
    const second = await build({ context: dir, buildArgs: { BASE: base }, cacheDir, push: false });
    const copy1 = first.steps.find((s) => s.instruction.startsWith("COPY"))!;
    const copy2 = second.steps.find((s) => s.instruction.startsWith("COPY"))!;
    expect(second.steps.find((s) => s.instruction.startsWith("RUN"))!.cached).toBe(false);
    expect(copy2.cached).toBe(true);
    expect(copy2.layer).toBe(copy1.layer);
    const root = await buildUnpack("link", dir);
    expect(await readFile(join(root, "opt/app/app.txt"), "utf8")).toBe("linked\n");
    expect(await readFile(join(root, "base-marker"), "utf8")).toBe("v2\n");
  });
});
