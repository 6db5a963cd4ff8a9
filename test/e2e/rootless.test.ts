/**
 * Rootless mode end to end: the CLI run by a plain user the test creates (with
 * useradd, and a subordinate id range in /etc/subuid and /etc/subgid), through
 * setpriv. RUN chown, useradd and apt-get install, and COPY --chown, must give the
 * same files, modes and owners as the same build as root, with no file owned by
 * the building user's uid.
 */
import { execFile } from "node:child_process";
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy } from "../../src/api.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { debianBaseMissing, debianLayout } from "../../src/testing/debian.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { describeTree, treeDifferences } from "../helpers/tree.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const BIN = resolve(__dirname, "../../bin/ocibuild");
const missing = !isRoot
  ? "needs root to create the test users"
  : !have("useradd") || !have("setpriv")
    ? "needs useradd and setpriv"
    : !have("unshare") || !have("newuidmap")
      ? "needs unshare and newuidmap (util-linux, uidmap)"
      : !haveRegistry() || !have("bwrap") || !have("umoci") || !have("skopeo")
        ? "needs docker-registry, bwrap, umoci, skopeo"
        : undefined;

interface TestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** The first id after every range already in /etc/subuid and /etc/subgid. */
async function freeSubidStart(): Promise<number> {
  let end = 300_000;
  for (const f of ["/etc/subuid", "/etc/subgid"]) {
    const text = await readFile(f, "utf8").catch(() => "");
    for (const line of text.split("\n")) {
      const [, s, c] = line.split(":");
      if (s !== undefined && c !== undefined) end = Math.max(end, Number(s) + Number(c));
    }
  }
  return end;
}

async function addUser(name: string, home: string, withRange: boolean): Promise<TestUser> {
  // No automatic range: the test decides whether the user has one.
  await run("useradd", ["-M", "-d", home, "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name]);
  if (withRange) {
    const start = await freeSubidStart();
    const range = `${start}-${start + 65535}`;
    await run("usermod", ["--add-subuids", range, "--add-subgids", range, name]);
  }
  const uid = Number((await pexec("id", ["-u", name])).stdout.trim());
  const gid = Number((await pexec("id", ["-g", name])).stdout.trim());
  await mkdir(home, { recursive: true });
  await chown(home, uid, gid);
  return { name, uid, gid, home };
}

/** `ocibuild ARGS` as the user (its own HOME, a plain PATH with this Node.js on it; bin/ocibuild, the command npm links), like a CI job's service user. */
async function asUser(u: TestUser, args: string[], cwd: string, home = u.home, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      "setpriv",
      ["--reuid", String(u.uid), "--regid", String(u.gid), "--init-groups", "--", BIN, ...args],
      { cwd, env: { HOME: home, PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, ...env }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

/**
 * `ocibuild ARGS` as the user, after root has run `rootScript` in a private mount
 * namespace of its own: what a container runtime sets up around a build (masked /proc,
 * device permissions), which the user's namespace then inherits locked.
 */
async function asUserAfter(u: TestUser, rootScript: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = `${rootScript} && exec setpriv --reuid "$U" --regid "$G" --init-groups -- "$@"`;
  return new Promise((done) =>
    execFile(
      "unshare",
      ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", BIN, ...args],
      { cwd, env: { HOME: u.home, PATH: `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, U: String(u.uid), G: String(u.gid) }, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    ),
  );
}

async function ownedBy(root: string, uid: number): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of await readdir(dir)) {
      const st = await lstat(join(dir, name));
      if (st.uid === uid || st.gid === uid) found.push(`${rel}${name}`);
      if (st.isDirectory()) await walk(join(dir, name), `${rel}${name}/`);
    }
  };
  await walk(root, "");
  return found;
}

describe.skipIf(missing !== undefined)(`rootless builds as a plain user (${missing ?? "needs root, useradd, setpriv, unshare, newuidmap, docker-registry, bwrap, umoci, skopeo"})`, () => {
  const suffix = process.pid.toString(36);
  let reg: TestRegistry;
  let work: string;
  let user: TestUser;
  let single: TestUser;
  let busybox: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-rootless-"));
    await chmod(work, 0o755);
    user = await addUser(`obrl${suffix}`, join(work, "home-range"), true);
    single = await addUser(`obrs${suffix}`, join(work, "home-single"), false);
    reg = await startRegistry();
    busybox = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: busybox, workDir: join(work, "base"), cacheDir: join(work, "root-cache") });
  }, 120_000);
  afterAll(async () => {
    await reg?.stop();
    for (const u of [user, single]) if (u) await run("userdel", [u.name]).catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** A context readable by the user, with the given Dockerfile and files. */
  async function context(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
    const dir = join(work, "ctx", name);
    await mkdir(dir, { recursive: true });
    await chmod(join(work, "ctx"), 0o755);
    await writeFile(join(dir, "Dockerfile"), dockerfile);
    for (const [p, c] of Object.entries(files)) await writeFile(join(dir, p), c);
    return dir;
  }

  async function unpack(ref: string, name: string): Promise<string> {
    const layout = join(work, "layouts", name);
    await copy(ref, `oci:${layout}:v1`, {});
    await run("umoci", ["unpack", "--image", `${layout}:v1`, join(work, "bundles", name)]);
    return join(work, "bundles", name, "rootfs");
  }

  const BUSYBOX_DF = [
    "ARG BASE",
    "FROM ${BASE}",
    // A chown in RUN, a user added the way useradd does it, root's own files.
    'RUN mkdir -p /data/sub /home/svc && echo x > /data/sub/f && chown -R 1000:1000 /data && echo "svc:x:2000:2000::/home/svc:/bin/sh" >> /etc/passwd && echo "svc:x:2000:" >> /etc/group && chown 2000:2000 /home/svc && echo root > /by-root',
    "COPY --chown=svc:svc greeting.txt /home/svc/",
    "COPY plain.txt /opt/",
    'CMD ["cat", "/home/svc/greeting.txt"]',
    "",
  ].join("\n");

  it("RUN chown, a new user and COPY --chown record the ids seen inside, the same as a build as root", async () => {
    const ctx = await context("busybox", BUSYBOX_DF, { "greeting.txt": "hello from rootless\n", "plain.txt": "plain\n" });
    const cacheDir = join(user.home, "cache");
    const ours = `${reg.host}/rootless/app:v1`;
    const r = await asUser(user, ["--progress", "plain", "-t", ours, "--build-arg", `BASE=${busybox}`, "--cache-dir", cacheDir, "."], ctx);
    expect(r.stderr).not.toMatch(/error\[|warning: rootless mode maps only/);
    expect(r.code).toBe(0);
    // The RUN saw itself as root.
    const rootless = await unpack(ours, "rootless");
    expect(await ownedBy(rootless, user.uid)).toEqual([]);
    const st = async (p: string) => {
      const s = await lstat(join(rootless, p));
      return `${s.uid}:${s.gid} ${(s.mode & 0o7777).toString(8)}`;
    };
    expect(await st("by-root")).toBe("0:0 644");
    expect(await st("data")).toBe("1000:1000 755");
    expect(await st("data/sub/f")).toBe("1000:1000 644");
    expect(await st("home/svc")).toBe("2000:2000 755");
    expect(await st("home/svc/greeting.txt")).toBe("2000:2000 644");
    expect(await st("opt/plain.txt")).toBe("0:0 644");

    const asRoot = `${reg.host}/rootless/root:v1`;
    const rr = await cli(["-t", asRoot, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(work, "root-cache"), ctx]);
    expect(rr.stderr).not.toMatch(/error\[/);
    expect(treeDifferences(await describeTree(rootless), await describeTree(await unpack(asRoot, "root")), ["rootless", "root"])).toEqual([]);
  }, 180_000);

  it("a RUN that writes thousands of files (read and packed by worker threads) gives the same tree as a build as root", async () => {
    const ctx = await context(
      "many-files",
      [
        "ARG BASE",
        "FROM ${BASE}",
        // 2,500 files, some owned by 1000, a setuid one, a hardlink and a symlink among them.
        'RUN i=0; while [ $i -lt 25 ]; do mkdir -p /deps/p$i; j=0; while [ $j -lt 100 ]; do echo "$i $j" > /deps/p$i/f$j; j=$((j+1)); done; i=$((i+1)); done; chown -R 1000:1000 /deps/p3; chmod 4755 /deps/p4/f1; ln /deps/p5/f1 /deps/p5/hard; ln -s f1 /deps/p5/soft',
        "RUN find /deps -type f | wc -l > /count",
        "",
      ].join("\n"),
    );
    const ours = `${reg.host}/rootless/many:v1`;
    const r = await asUser(user, ["--progress", "plain", "-t", ours, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(user.home, "cache-many"), "."], ctx);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    const rootless = await unpack(ours, "many-rootless");
    expect((await readFile(join(rootless, "count"), "utf8")).trim()).toBe("2501");
    expect(await ownedBy(rootless, user.uid)).toEqual([]);
    const p3 = await lstat(join(rootless, "deps/p3/f7"));
    expect(`${p3.uid}:${p3.gid}`).toBe("1000:1000");
    expect(((await lstat(join(rootless, "deps/p4/f1"))).mode & 0o7777).toString(8)).toBe("4755");
    expect((await lstat(join(rootless, "deps/p5/hard"))).ino).toBe((await lstat(join(rootless, "deps/p5/f1"))).ino);

    const asRoot = `${reg.host}/rootless/many-root:v1`;
    const rr = await cli(["-t", asRoot, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(work, "root-cache"), ctx]);
    expect(rr.stderr).not.toMatch(/error\[/);
    expect(treeDifferences(await describeTree(rootless), await describeTree(await unpack(asRoot, "many-root")), ["rootless", "root"])).toEqual([]);
  }, 180_000);

  it("a rebuild by the same user takes every step from its cache", async () => {
    const ctx = await context("busybox", BUSYBOX_DF, { "greeting.txt": "hello from rootless\n", "plain.txt": "plain\n" });
    const r = await asUser(user, ["--progress", "plain", "--no-push", "-o", `oci:${join(user.home, "out")}:v1`, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(user.home, "cache"), "."], ctx);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/cached: 4\/4/);
  }, 120_000);

  it("NODE_EXTRA_CA_CERTS is kept from Node's start-up, in the command run again in the user namespace too", async () => {
    // Node warns at start-up about an extra CA file it cannot load; bin/ocibuild and the
    // rootless re-exec start Node without the variable (it is read at the first TLS connection).
    const missingCa = join(user.home, "no-such-ca.pem");
    expect((await pexec(process.execPath, ["-e", "0"], { env: { ...process.env, NODE_EXTRA_CA_CERTS: missingCa } })).stderr).toContain("extra certs");
    const ctx = await context("busybox", BUSYBOX_DF, { "greeting.txt": "hello from rootless\n", "plain.txt": "plain\n" });
    const args = ["--progress", "plain", "--no-push", "-o", `oci:${join(user.home, "out-ca")}:v1`, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(user.home, "cache"), "."];
    const r = await asUser(user, args, ctx, user.home, { NODE_EXTRA_CA_CERTS: missingCa });
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain("extra certs");
  }, 120_000);

  it("without a subordinate range: a warning that names the fix, and a chown to another id fails as a RUN error", async () => {
    const ctx = await context("single", `ARG BASE\nFROM \${BASE}\nRUN echo ok > /ok\nRUN chown 1000 /ok\n`);
    const r = await asUser(single, ["--progress", "plain", "--no-push", "-o", `oci:${join(single.home, "out")}:v1`, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(single.home, "cache"), "."], ctx);
    expect(r.stderr).toContain(`warning: rootless mode maps only your own uid (to root)`);
    expect(r.stderr).toContain(`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${single.name}`);
    expect(r.stderr).toMatch(/error\[BUILD_RUN_FAILED\]: Dockerfile:4: RUN chown 1000 \/ok/);
    expect(r.stderr).not.toMatch(/INTERNAL|at .*\.js:\d+/);
    expect(r.code).toBe(1);
  }, 120_000);

  it("ocibuild unshare runs a command as root of the same namespace: the user can remove its own rootless cache", async () => {
    const cacheDir = join(user.home, "cache");
    // The first test's layers hold files of subordinate ids (1000, 2000): not the user's to remove directly.
    const direct = await new Promise<number>((done) =>
      execFile("setpriv", ["--reuid", String(user.uid), "--regid", String(user.gid), "--init-groups", "rm", "-rf", cacheDir], (err) => done(err ? 1 : 0)),
    );
    expect(direct).toBe(1);
    const r = await asUser(user, ["unshare", "--", "rm", "-rf", cacheDir], work);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    await expect(lstat(cacheDir)).rejects.toThrow(/ENOENT/);
  }, 60_000);

  it("where /proc is masked (as in a container), RUN goes without a PID namespace on the existing /proc, and says so once", async () => {
    const ctx = await context("masked", `ARG BASE\nFROM \${BASE}\nRUN echo $$ > /pid1\nRUN echo $$ > /pid2\n`);
    const out = join(user.home, "masked-out");
    // What a container runtime does to /proc (runc's maskedPaths), made by root in a mount
    // namespace of its own: the user's namespace inherits it locked, and a new procfs can then
    // not be mounted there, as in a container.
    const args = ["--progress", "plain", "--no-push", "-o", `oci:${out}:v1`, "--build-arg", `BASE=${busybox}`, "--cache-dir", join(user.home, "cache-masked"), "."];
    const r = await asUserAfter(user, "mount --bind /dev/null /proc/timer_list", args, ctx);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(r.stderr.match(/RUN steps run without a PID namespace of their own/g)?.length).toBe(1);
    expect(r.stderr).toContain("procMount: Unmasked");
    const bundle = join(work, "bundles", "masked");
    await run("umoci", ["unpack", "--image", `${out}:v1`, bundle]);
    // Inside a PID namespace of its own the shell would be pid 1 or 2.
    expect(Number((await readFile(join(bundle, "rootfs/pid1"), "utf8")).trim())).toBeGreaterThan(2);
  }, 120_000);

  /** A /dev/net/tun of the given mode for the build (a device node bound over the host's in a private mount namespace). */
  async function tunNode(mode: number): Promise<string> {
    const node = join(work, `tun-${mode.toString(8)}`);
    await rm(node, { force: true });
    await run("mknod", ["-m", mode.toString(8), node, "c", "10", "200"]);
    return `mount --bind ${node} /dev/net/tun`;
  }
  const NET_DF = "ARG BASE\nFROM ${BASE}\nARG PORT\nRUN ip -4 -o addr > /addrs; if nc -w 3 127.0.0.1 $PORT </dev/null; then echo reached > /loopback; else echo refused > /loopback; fi\n";
  const netArgs = (out: string) => ["--progress", "plain", "--no-cache", "--no-push", "-o", `oci:${out}:v1`, "--build-arg", `BASE=${busybox}`, "--build-arg", `PORT=${reg.host.split(":")[1]}`, "--cache-dir", join(user.home, "cache-net"), "."];

  it("RUN's default network is its own namespace (slirp4netns): the host's 127.0.0.1 does not answer", async () => {
    const ctx = await context("net-own", NET_DF);
    const out = join(user.home, "net-own-out");
    const r = await asUserAfter(user, await tunNode(0o666), netArgs(out), ctx);
    expect(r.stderr).not.toMatch(/error\[|share the host's network/);
    expect(r.code).toBe(0);
    await run("umoci", ["unpack", "--image", `${out}:v1`, join(work, "bundles", "net-own")]);
    const root = join(work, "bundles", "net-own", "rootfs");
    expect(await readFile(join(root, "addrs"), "utf8")).toContain("tap0");
    expect(await readFile(join(root, "loopback"), "utf8")).toBe("refused\n");
  }, 120_000);

  it("where /dev/net/tun is closed to the user, RUN shares the host's network and the build says so once", async () => {
    const ctx = await context("net-shared", NET_DF.replace("RUN ", "RUN true\nRUN "));
    const out = join(user.home, "net-shared-out");
    const r = await asUserAfter(user, await tunNode(0o600), netArgs(out), ctx);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    expect(r.stderr.match(/RUN steps share the host's network as this user sees it/g)?.length).toBe(1);
    expect(r.stderr).toContain("mode 0666");
    await run("umoci", ["unpack", "--image", `${out}:v1`, join(work, "bundles", "net-shared")]);
    expect(await readFile(join(work, "bundles", "net-shared", "rootfs", "loopback"), "utf8")).toBe("reached\n");
  }, 120_000);

  it("a user whose HOME does not exist builds, caching under the temp dir, and is told so", async () => {
    const ctx = await context("nohome", `ARG BASE\nFROM \${BASE}\nRUN echo ok > /ok\n`);
    const out = `oci:${join(user.home, "nohome-out")}:v1`;
    const r = await asUser(user, ["--progress", "plain", "--no-push", "-o", out, "--build-arg", `BASE=${busybox}`, "."], ctx, "/nonexistent");
    expect(r.stderr).toContain(`cannot create the cache directory /nonexistent/.cache/ocibuild (`);
    expect(r.stderr).toContain(`this build caches in ${tmpdir()}/ocibuild-cache-${user.uid} instead`);
    expect(r.stderr).not.toMatch(/error\[|INTERNAL/);
    expect(r.code).toBe(0);
    await rm(join(tmpdir(), `ocibuild-cache-${user.uid}`), { recursive: true, force: true });
  }, 120_000);

  const debianMissing = debianBaseMissing();
  it.skipIf(debianMissing !== undefined)(
    `a Debian base: apt-get install, useradd and chown in RUN; the CMD runs; the same as root (${debianMissing ?? "needs root and mmdebstrap"})`,
    async () => {
      const layout = await debianLayout(join(resolve(__dirname, "../.."), ".cache", "test-debian"));
      const debian = `${reg.host}/base/debian:bookworm`;
      await copy(`oci:${layout.dir}:${layout.ref}`, debian, {});
      const ctx = await context(
        "debian",
        [
          "ARG BASE",
          "FROM ${BASE}",
          "RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends hello && rm -rf /var/lib/apt/lists/*",
          "RUN useradd -u 1234 -m app && mkdir /data && chown app:app /data",
          "COPY --chown=app:app greeting.txt /home/app/",
          'CMD ["hello"]',
          "",
        ].join("\n"),
        { "greeting.txt": "hi\n" },
      );
      const ours = `${reg.host}/rootless/debian:v1`;
      const r = await asUser(user, ["--progress", "plain", "-t", ours, "--build-arg", `BASE=${debian}`, "--cache-dir", join(user.home, "cache"), "."], ctx);
      expect(r.stderr).not.toMatch(/error\[/);
      expect(r.code).toBe(0);
      const rootless = await unpack(ours, "debian-rootless");
      expect(await ownedBy(rootless, user.uid)).toEqual([]);
      const s = await lstat(join(rootless, "usr/bin/hello"));
      expect(`${s.uid}:${s.gid}`).toBe("0:0");
      const home = await lstat(join(rootless, "home/app/greeting.txt"));
      expect(`${home.uid}:${home.gid}`).toBe("1234:1234");
      expect((await pexec("chroot", [rootless, "hello"])).stdout).toBe("Hello, world!\n");

      const asRoot = `${reg.host}/rootless/debian-root:v1`;
      const rr = await cli(["-t", asRoot, "--build-arg", `BASE=${debian}`, "--cache-dir", join(work, "root-cache"), ctx]);
      expect(rr.stderr).not.toMatch(/error\[/);
      // apt and useradd write dates and logs: files, modes and owners are compared, not content.
      const diff = treeDifferences(await describeTree(rootless, false), await describeTree(await unpack(asRoot, "debian-root"), false), ["rootless", "root"]);
      expect(diff).toEqual([]);
    },
    600_000,
  );
});
