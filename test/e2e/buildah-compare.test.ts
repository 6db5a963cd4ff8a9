/**
 * The same Dockerfile built by ocibuild and by buildah (when installed) gives the
 * same file list, modes and owners. Any difference is named.
 */
import { lstat, mkdtemp, readdir, readFile, readlink, rm, writeFile, cp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { cli, have, isRoot, run } from "../helpers/tools.js";

const CTX = resolve(__dirname, "../../testdata/multistage");
const ready = isRoot && haveRegistry() && have("bwrap") && have("buildah") && have("skopeo") && have("umoci");

const BUILDAH_MOUNT_STUBS = ["run", "etc/hostname", "etc/hosts", "etc/resolv.conf"];

async function listTree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(p);
      const kind = st.isDirectory() ? "d" : st.isSymbolicLink() ? `l->${await readlink(p)}` : st.isFile() ? `f:${st.size}` : "other";
      out.set(r, `${kind} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`);
      if (st.isDirectory()) await walk(p, r);
    }
  };
  await walk(root, "");
  return out;
}

describe.skipIf(!ready)("ocibuild and buildah build the same image (needs root, bwrap, buildah, docker-registry, skopeo, umoci)", () => {
  let reg: TestRegistry;
  let work: string;
  beforeAll(async () => {
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-buildah-"));
  });
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("same files, modes, owners and symlinks from testdata/multistage", async () => {
    const base = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: base, workDir: join(work, "base"), cacheDir: join(work, "cache") });
    // Debian's buildah does not parse symbolic --chmod: it gets the octal equivalent in a copy
    // of the context. ocibuild keeps the symbolic form: an octal --chmod also sets the mode of
    // the directories a COPY creates on the way (BuildKit since v0.21), which buildah 1.28 does not.
    const ctx = join(work, "ctx");
    await cp(CTX, ctx, { recursive: true });
    const bhCtx = join(work, "ctx-buildah");
    await cp(CTX, bhCtx, { recursive: true });
    const df = (await readFile(join(bhCtx, "Dockerfile"), "utf8")).replace("--chmod=u+x,go-w", "--chmod=0744");
    await writeFile(join(bhCtx, "Dockerfile"), df);

    const ours = `${reg.host}/cmp/ocibuild:v1`;
    const r = await cli(["-t", ours, "--build-arg", `BASE=${base}`, "--cache-dir", join(work, "cache"), ctx]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(r.code).toBe(0);
    const store = ["--root", join(work, "bh/root"), "--runroot", join(work, "bh/run"), "--storage-driver", "vfs"];
    await run("buildah", [...store, "bud", "--layers", "--isolation", "chroot", "--tls-verify=false", "--build-arg", `BASE=${base}`, "-t", "localhost/cmp:v1", bhCtx]);
    await run("buildah", [...store, "push", "localhost/cmp:v1", `oci:${join(work, "theirs")}:v1`]);
    await run("skopeo", ["copy", "--src-tls-verify=false", `docker://${ours}`, `oci:${join(work, "ours")}:v1`]);
    for (const n of ["ours", "theirs"]) await run("umoci", ["unpack", "--image", `${join(work, n)}:v1`, join(work, `${n}-bundle`)]);
    const a = await listTree(join(work, "ours-bundle", "rootfs"));
    const b = await listTree(join(work, "theirs-bundle", "rootfs"));
    // buildah (chroot isolation) leaves the mount points it made for RUN in its layers, as
    // empty files and directories; BuildKit removes such stubs, and so does ocibuild, but for
    // /dev, /proc and /sys, which BuildKit (runc) keeps as 0755 directories, as buildah and ocibuild do.
    for (const stub of BUILDAH_MOUNT_STUBS) {
      const v = b.get(stub);
      if (v !== undefined) {
        expect(v, `buildah's ${stub} is an empty mount point`).toMatch(/^(d|f:0) /);
        b.delete(stub);
      }
    }
    const differences: string[] = [];
    for (const [p, v] of a) if (b.get(p) !== v) differences.push(`${p}: ocibuild ${v}, buildah ${b.get(p) ?? "absent"}`);
    for (const [p, v] of b) if (!a.has(p)) differences.push(`${p}: ocibuild absent, buildah ${v}`);
    expect(differences).toEqual([]);
    expect(a.size).toBeGreaterThan(100);
  }, 240_000);
});
