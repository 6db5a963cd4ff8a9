/**
 * `ocibuild run` beyond busybox as root: the seed's hello world (a Debian base, a
 * real `apt-get install python3` in RUN, a Python script as CMD), an arm64 image
 * under qemu-user emulation, and a rootless run by a plain user (made with useradd
 * and a subordinate id range, run through setpriv, as rootless.test.ts does).
 */
import { execFile } from "node:child_process";
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copy } from "../../src/api.js";
import { emulationStatus, setupBinfmt } from "../../src/builder/emulation.js";
import { ARM64_BUSYBOX, HOST_BUSYBOX, haveArm64Busybox, pushBusyboxBase } from "../../src/testing/busybox.js";
import { debianBaseMissing, debianLayout } from "../../src/testing/debian.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const BIN = resolve(__dirname, "../../bin/ocibuild.cjs");
const ready = isRoot && haveRegistry() && have("bwrap");

/** Overlay and fuse mounts under `dir` in this process's mount table. */
async function mountsUnder(dir: string): Promise<string[]> {
  return (await readFile("/proc/self/mounts", "utf8")).split("\n").filter((l) => l.split(" ")[1]?.startsWith(dir));
}

function arm64Missing(): string | undefined {
  if (process.arch !== "x64") return "needs an amd64 host";
  if (!haveArm64Busybox()) return "needs the arm64 busybox scripts/setup.sh fetches into .cache/debs";
  if (!have("qemu-aarch64-static")) return "needs qemu-user-static";
  return undefined;
}

function rootlessMissing(): string | undefined {
  if (!have("useradd") || !have("setpriv")) return "needs useradd and setpriv";
  if (!have("unshare") || !have("newuidmap")) return "needs unshare and newuidmap (util-linux, uidmap)";
  return undefined;
}

describe.skipIf(!ready)("ocibuild run on other bases (needs root, bwrap, docker-registry)", () => {
  let reg: TestRegistry;
  let work: string;
  let cacheDir: string;
  const users: string[] = [];

  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-run-platforms-"));
    await chmod(work, 0o755);
    cacheDir = join(work, "cache");
  });
  afterAll(async () => {
    await reg?.stop();
    for (const u of users) await run("userdel", [u]).catch(() => undefined);
    if (work) await rm(work, { recursive: true, force: true });
  });

  const debianMissing = debianBaseMissing();
  it.skipIf(debianMissing !== undefined)(`the hello world: apt-get install python3 in RUN, and run prints the greeting (${debianMissing ?? "needs root and mmdebstrap"})`, async () => {
    const layout = await debianLayout(join(resolve(__dirname, "../.."), ".cache", "test-debian"));
    const debian = `${reg.host}/base/debian:bookworm`;
    await copy(`oci:${layout.dir}:${layout.ref}`, debian, {});
    const ctx = join(work, "hello");
    await mkdir(ctx);
    await writeFile(join(ctx, "hello.py"), 'import sys\nprint(f"Hello, world! from Python {sys.version_info.major}")\n');
    await writeFile(
      join(ctx, "Dockerfile"),
      `FROM ${debian}\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*\nCOPY hello.py /app/\nWORKDIR /app\nCMD ["python3", "hello.py"]\n`,
    );
    const iid = join(work, "hello.iid");
    const b = await cli(["--no-push", "--iidfile", iid, "--cache-dir", cacheDir, ctx]);
    expect(b.code, b.stderr).toBe(0);
    const r = await cli(["run", "--cache-dir", cacheDir, (await readFile(iid, "utf8")).trim()]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("Hello, world! from Python 3\n");
    expect(r.code).toBe(0);
    expect(await mountsUnder(cacheDir)).toEqual([]);
  }, 600_000);

  const noArm64 = arm64Missing();
  it.skipIf(noArm64 !== undefined)(`an arm64 image runs under qemu-user emulation, picked by --platform (${noArm64 ?? "needs amd64, qemu-user-static, the arm64 busybox"})`, async () => {
    await setupBinfmt(["aarch64"]);
    const status = await emulationStatus({ os: "linux", architecture: "arm64" });
    expect(status.ok, status.reason).toBe(true);
    const ref = `${reg.host}/base/multi:v1`;
    await pushBusyboxBase({ reference: ref, workDir: join(work, "multi"), cacheDir, busyboxes: { amd64: HOST_BUSYBOX, arm64: ARM64_BUSYBOX } });
    const arm = await cli(["run", "--cache-dir", cacheDir, "--platform", "linux/arm64", ref, "uname", "-m"]);
    expect(arm.stdout).toBe("aarch64\n");
    expect(arm.code).toBe(0);
    const host = await cli(["run", "--cache-dir", cacheDir, ref, "uname", "-m"]);
    expect(host.stdout).toBe("x86_64\n");
  }, 300_000);

  const noRootless = rootlessMissing();
  it.skipIf(noRootless !== undefined)(`a plain user runs an image rootless, in its own user namespace (${noRootless ?? "needs useradd, setpriv, unshare, newuidmap"})`, async () => {
    const ref = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: ref, workDir: join(work, "base"), cacheDir });
    const name = `obrun${process.pid.toString(36)}`;
    const home = join(work, "home");
    await run("useradd", ["-M", "-d", home, "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", name]);
    users.push(name);
    const start = 400_000 + (process.pid % 1000) * 65536;
    await run("usermod", ["--add-subuids", `${start}-${start + 65535}`, "--add-subgids", `${start}-${start + 65535}`, name]);
    const uid = Number((await run("id", ["-u", name])).stdout.trim());
    const gid = Number((await run("id", ["-g", name])).stdout.trim());
    await mkdir(home);
    await chown(home, uid, gid);
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((done) =>
      execFile(
        "setpriv",
        ["--reuid", String(uid), "--regid", String(gid), "--init-groups", "--", process.execPath, BIN, "run", "--cache-dir", join(home, "cache"), ref, "sh", "-c", "id -u; echo hi > /f; cat /f; exit 7"],
        { cwd: home, env: { HOME: home, PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" } },
        (err, stdout, stderr) => done({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
      ),
    );
    expect(r.stderr).not.toMatch(/error/);
    expect(r.stdout).toBe("0\nhi\n");
    expect(r.code).toBe(7);
    expect(await mountsUnder(home)).toEqual([]);
  }, 300_000);
});
