/**
 * Extracted layers and step results live under <cache-dir>/rootfs as real files,
 * setuid bits and device nodes included. With the cache directory in a place other
 * users can read, a setuid-root binary a base layer or a `RUN chmod 4755` planted
 * must still be out of their reach: the directories holding trees and scratch are
 * 0700, created so and narrowed when an older cache left them wider. Checked as a
 * real unprivileged user made for the test (useradd) through setpriv.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const pexec = promisify(execFile);
const ready = isRoot && haveRegistry() && have("bwrap") && have("useradd") && have("userdel") && have("setpriv");
const PRIVATE = ["tmp", "rootfs", "rootfs/layers", "rootfs/tmp", "mounts", "git"];

/** Every setuid file under `dir` (walked as root). */
async function setuidFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    if (((await stat(p)).mode & 0o4000) !== 0) out.push(p);
  }
  return out;
}

describe.skipIf(!ready)("the cache directory's trees are private (needs root, bwrap, docker-registry, useradd, setpriv)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  const user = `ocibt${randomBytes(4).toString("hex")}`;
  let uid = 0;
  let gid = 0;

  beforeAll(async () => {
    reg = await startRegistry();
    // A world-readable place, as /tmp/ci-cache or a shared volume would be.
    work = await mkdtemp(join(tmpdir(), "ocibuild-cache-private-"));
    await chmod(work, 0o755);
    base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "base-cache") });
    await run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user]);
    uid = Number((await run("id", ["-u", user])).stdout.trim());
    gid = Number((await run("id", ["-g", user])).stdout.trim());
  }, 120_000);
  afterAll(async () => {
    await run("userdel", [user]).catch(() => {});
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Run `sh -c script` as the test's unprivileged user: stdout, or the failure's stderr. */
  async function asUser(script: string): Promise<string> {
    const r = await pexec("setpriv", [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", "/bin/sh", "-c", script]).catch((e: { stdout: string; stderr: string }) => e);
    return `${r.stdout}${r.stderr}`;
  }

  it("another user cannot reach a setuid binary a RUN left in the cache, and every tree directory is 0700 (an older, wider one narrowed)", async () => {
    const cacheDir = join(work, "cache");
    // A cache from before: its tree directories world-readable.
    for (const d of ["rootfs/layers", "tmp", "mounts"]) await mkdir(join(cacheDir, d), { recursive: true, mode: 0o755 });
    for (const d of ["rootfs", "rootfs/layers", "tmp", "mounts"]) await chmod(join(cacheDir, d), 0o755);
    const ctx = join(work, "ctx");
    await mkdir(ctx);
    await writeFile(join(ctx, "Dockerfile"), `FROM ${base}\nRUN cp /bin/busybox /suid-sh && chmod 4755 /suid-sh\n`);
    await build({ context: ctx, cacheDir, push: false });

    const planted = await setuidFiles(cacheDir);
    expect(planted.length).toBeGreaterThan(0);
    expect(await asUser(`ls -d ${cacheDir} && echo cache-dir-visible`)).toContain("cache-dir-visible");
    for (const p of planted) {
      const out = await asUser(`stat -c %a ${p} && echo reached`);
      expect(out, p).not.toContain("reached");
      expect(out, p).toMatch(/Permission denied/);
    }
    for (const d of PRIVATE) expect(((await stat(join(cacheDir, d))).mode & 0o777).toString(8), d).toBe("700");
  });

  it("a tree directory owned by another user is refused, not used", async () => {
    const cacheDir = join(work, "cache-foreign");
    await mkdir(join(cacheDir, "rootfs"), { recursive: true });
    await run("chown", [`${uid}:${gid}`, join(cacheDir, "rootfs")]);
    const ctx = join(work, "ctx");
    await expect(build({ context: ctx, cacheDir, push: false })).rejects.toMatchObject({ code: "CACHE_DIR_UNSAFE", message: expect.stringContaining(join(cacheDir, "rootfs")) });
  });
});
