/**
 * ocibuild inside a real container (podman from Debian, rootful, runc), as a CI pod
 * runs it: the container's root filesystem is the Debian base the tests make, plus
 * bubblewrap, uidmap and slirp4netns from the mirror, a user 1000 with a subordinate
 * range, and this machine's node binary; the checkout is bind-mounted read-only.
 * newuidmap/newgidmap carry file capabilities rather than setuid (as rootless
 * BuildKit's image does): a setuid newuidmap cannot write the maps without
 * CAP_SYS_ADMIN, which a container does not have.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { debianBaseMissing, debianRootfs } from "../../src/testing/debian.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const REPO = resolve(__dirname, "../..");
const missing = !isRoot
  ? "needs root to run podman"
  : !have("podman") || !have("runc")
    ? "needs podman and runc (scripts/setup.sh installs them)"
    : !have("setcap")
      ? "needs setcap (libcap2-bin)"
      : !haveRegistry()
        ? "needs docker-registry"
        : debianBaseMissing();

/** The container's root filesystem, made once under .cache (temp dir, then rename). */
async function containerRootfs(): Promise<string> {
  const dir = join(REPO, ".cache", "test-container-rootfs");
  if (existsSync(join(dir, "usr/local/bin/node"))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  try {
    await run("cp", ["-a", await debianRootfs(join(REPO, ".cache", "test-debian")), tmp]);
    await copyFile("/etc/resolv.conf", join(tmp, "etc/resolv.conf"));
    const setup = [
      "apt-get update -qq",
      "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap uidmap slirp4netns >/dev/null",
      "rm -rf /var/lib/apt/lists/*",
      "useradd -u 1000 -m builder",
      "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 builder",
    ].join(" && ");
    await run("chroot", [tmp, "/bin/sh", "-c", setup]);
    for (const [tool, cap] of [["newuidmap", "cap_setuid+ep"], ["newgidmap", "cap_setgid+ep"]] as const) {
      await run("chmod", ["u-s", join(tmp, "usr/bin", tool)]);
      await run("setcap", [cap, join(tmp, "usr/bin", tool)]);
    }
    await copyFile(process.execPath, join(tmp, "usr/local/bin/node"));
    await run("chmod", ["755", join(tmp, "usr/local/bin/node")]);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

describe.skipIf(missing !== undefined)(`ocibuild in a podman container (${missing ?? "needs root, podman, runc, setcap, docker-registry, mmdebstrap"})`, () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let rootfs: string;
  let ctx: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-container-"));
    reg = await startRegistry();
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    rootfs = await containerRootfs();
    ctx = join(work, "ctx");
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), "ARG BASE\nFROM ${BASE}\nRUN id -u > /uid && echo hi > /hello && chown 1000:1000 /hello\nCOPY a.txt /a.txt\n");
    await writeFile(join(ctx, "a.txt"), "a\n");
    await run("chmod", ["-R", "a+rX", work]);
  }, 600_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** `podman run` of the CLI in the container with `extra` podman flags; never throws. */
  async function inContainer(extra: string[], args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const podman = [
      "run", "--rm", "--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", "--network", "host",
      "-v", `${REPO}:/repo:ro`, "-v", `${ctx}:/ctx:ro`, ...extra, "--rootfs", rootfs,
      "/repo/bin/ocibuild", "build", "--progress", "plain", "--build-arg", `BASE=${base}`, ...args, "/ctx",
    ];
    try {
      const r = await pexec("podman", podman, { maxBuffer: 64 << 20, timeout: 300_000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof x.code === "number" ? x.code : 1, stdout: x.stdout ?? "", stderr: x.stderr ?? "" };
    }
  }

  it("as uid 1000 with seccomp and AppArmor unconfined: the build runs rootless and pushes", async () => {
    const ref = `${reg.host}/container/app:v1`;
    const unconfined = ["--user", "1000:1000", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "-e", "HOME=/home/builder"];
    const r = await inContainer(unconfined, ["-t", ref]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    // Inside the sandbox the RUN was root, however the container's user was 1000.
    const layout = join(work, "pulled");
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ref}`, `oci:${layout}:v1`]);
    await run("umoci", ["unpack", "--image", `${layout}:v1`, join(work, "bundle")]);
    const { stdout } = await pexec("stat", ["-c", "%u:%g", join(work, "bundle/rootfs/hello"), join(work, "bundle/rootfs/a.txt")]);
    expect(stdout.split("\n").filter(Boolean)).toEqual(["1000:1000", "0:0"]);
  }, 600_000);

  it("as root in a default container: fails before any RUN runs, naming --executor buildkit and the settings", async () => {
    const r = await inContainer([], ["--no-push", "-o", "oci:/tmp/out:v1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error\[SANDBOX_UNAVAILABLE\]: Dockerfile:3: cannot run RUN steps: bwrap cannot create a sandbox here/m);
    expect(r.stderr).toContain("--executor buildkit");
    expect(r.stderr).toContain("--security-opt seccomp=unconfined");
    // The RUN never ran: its own output is not there.
    expect(r.stderr).not.toMatch(/^\[0 1\] \d/m);
  }, 600_000);
});
