import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LayerEntry } from "../../src/oci/layer.js";
import { mountRoot, type MountedRoot } from "../../src/builder/fs/overlay.js";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import type { RunSpec } from "../../src/builder/sandbox/index.js";
import { effectiveEnv, OutputTail } from "../../src/builder/sandbox/index.js";
import { snapshotChanges } from "../../src/builder/fs/snapshot.js";
import { resolveUser } from "../../src/builder/users.js";
import { canOverlay, haveBusyboxStatic, haveTool, isRoot, makeBusyboxRoot } from "../../testdata/builder/fixtures.js";

describe("sandbox helpers", () => {
  it("adds PATH and HOME as Docker does, without overriding the image's", () => {
    expect(effectiveEnv({ env: ["A=1"], uid: 0 })).toEqual(["A=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]);
    expect(effectiveEnv({ env: ["PATH=/x"], uid: 1000 })).toEqual(["PATH=/x", "HOME=/"]);
    expect(effectiveEnv({ env: ["HOME=/h"], uid: 1000, home: "/home/app" })).toContain("HOME=/h");
    expect(effectiveEnv({ env: [], uid: 1000, home: "/home/app" })).toContain("HOME=/home/app");
  });
  it("keeps the last lines of output", () => {
    const t = new OutputTail(3);
    t.push(Buffer.from("1\n2\n3"));
    t.push(Buffer.from("\n4\n5"));
    expect(t.toString()).toBe("3\n4\n5");
    const euro = Buffer.from("\n€\n");
    t.push(euro.subarray(0, 2));
    t.push(euro.subarray(2));
    expect(t.toString()).toBe("4\n5\n€");
  });
});

const executor = new BwrapExecutor();
const bwrapOk = isRoot && haveTool("bwrap") && haveBusyboxStatic() && canOverlay();

describe.skipIf(!bwrapOk)("BwrapExecutor (needs root, bwrap, overlayfs, busybox-static)", () => {
  let base: string;
  let lower: string;
  /** The same root without /dev, /proc and /sys (`lower` has them, as distribution images do). */
  let bare: string;
  const mounted: MountedRoot[] = [];
  let n = 0;

  beforeAll(async () => {
    expect(await executor.available()).toEqual({ ok: true });
    base = await mkdtemp(join(tmpdir(), "ocibuild-sandbox-"));
    lower = join(base, "lower");
    bare = join(base, "bare");
    await makeBusyboxRoot(bare);
    await makeBusyboxRoot(lower);
    for (const d of ["dev", "proc", "sys"]) await mkdir(join(lower, d), { mode: 0o755 });
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await m.unmount();
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  async function fresh(from = lower): Promise<MountedRoot> {
    const r = await mountRoot([from], join(base, `s${n++}`));
    mounted.push(r);
    return r;
  }

  async function run(root: MountedRoot, script: string, extra: Partial<RunSpec> = {}) {
    let out = "";
    const res = await executor.runInRoot({
      root: root.merged,
      args: ["/bin/sh", "-c", script],
      env: [],
      cwd: "/",
      uid: 0,
      gid: 0,
      additionalGids: [],
      network: "default",
      onOutput: (_s, c) => (out += c.toString()),
      ...extra,
    });
    return { ...res, out };
  }

  async function changes(root: MountedRoot, exclude: string[], from = lower): Promise<LayerEntry[]> {
    const out: LayerEntry[] = [];
    for await (const e of snapshotChanges(root, [from], { exclude })) out.push(e);
    return out;
  }

  it("propagates the exit code and streams output", async () => {
    const root = await fresh();
    const r = await run(root, "echo to-out; echo to-err >&2; exit 7");
    expect(r.exitCode).toBe(7);
    expect(r.out).toContain("to-out");
    expect(r.out).toContain("to-err");
    expect(r.tail).toContain("to-err");
    expect((await run(root, "true")).exitCode).toBe(0);
  });

  it("cannot see or change the host outside its root: writes to / land in the layer", async () => {
    const root = await fresh();
    const tag = `ocibuild-canary-${randomBytes(4).toString("hex")}`;
    const hostFile = join(base, `${tag}.host`);
    await writeFile(hostFile, "host secret");
    const r = await run(root, `echo written > /${tag}; cat ${hostFile} || echo no-host-file; ls /work/main 2>/dev/null || echo no-host-tree; echo tmp > /tmp/${tag}`);
    expect(r.exitCode).toBe(0);
    expect(r.out).toContain("no-host-file");
    expect(r.out).toContain("no-host-tree");
    expect(r.out).not.toContain("host secret");
    expect(existsSync(`/${tag}`)).toBe(false);
    expect(existsSync(`/tmp/${tag}`)).toBe(false);
    expect(await readFile(join(root.upper, tag), "utf8")).toBe("written\n");
    const entries = await changes(root, r.createdPaths);
    expect(entries.map((e) => e.path).sort()).toEqual(["tmp", `tmp/${tag}`, tag].sort());
  });

  it("reports the mount points it had to create so the layer does not keep them", async () => {
    const root = await fresh();
    const r = await run(root, "test -d /proc/self && test -c /dev/null && echo ok");
    expect(r.out).toContain("ok");
    if (existsSync("/etc/resolv.conf")) expect(r.createdPaths).toContain("etc/resolv.conf");
    expect(await changes(root, r.createdPaths)).toEqual([]);
  });

  it("keeps the /dev, /proc and /sys mount points a root lacked in the layer, 0755 and root's, as BuildKit's runc does", async () => {
    for (const privileged of [false, true]) {
      const root = await fresh(bare);
      const r = await run(root, "test -d /proc/self && test -c /dev/null && echo ok", { privileged });
      expect(r.out).toContain("ok");
      expect(r.createdPaths.filter((p) => ["dev", "proc", "sys"].includes(p))).toEqual([]);
      const entries = await changes(root, r.createdPaths, bare);
      expect(entries.map((e) => [e.path, e.type, e.mode.toString(8), e.uid, e.gid])).toEqual([
        ["dev", "directory", "755", 0, 0],
        ["proc", "directory", "755", 0, 0],
        ["sys", "directory", "755", 0, 0],
      ]);
    }
  });

  it("has its own lo and tap0 by default, only lo with network=none, the host's interfaces with network=host", async () => {
    const root = await fresh();
    const links = "ip -o link | cut -d: -f2 | tr -d ' '";
    const none = await run(root, links, { network: "none" });
    expect(none.exitCode).toBe(0);
    expect(none.out.trim().split("\n")).toEqual(["lo"]);
    const own = await run(root, links);
    expect(own.out.trim().split("\n").sort()).toEqual(["lo", "tap0"]);
    const hostIfaces = (await readdir("/sys/class/net")).sort();
    const shared = await run(root, links, { network: "host" });
    expect(shared.out.trim().split(/\s+/).map((l) => l.replace(/@.*/, "")).sort()).toEqual(hostIfaces);
  });

  it("runs as the USER resolved from the image: uid, gid, supplementary groups, HOME, owned files", async () => {
    const root = await fresh();
    const u = await resolveUser(root.merged, "app");
    expect(u).toMatchObject({ uid: 1000, gid: 1000, home: "/home/app" });
    const r = await run(root, "id -u; id -g; id -G; echo $HOME; pwd; touch /tmp/by-app", {
      ...u,
      cwd: "/work/dir",
    });
    expect(r.exitCode).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines[0]).toBe("1000");
    expect(lines[1]).toBe("1000");
    expect(lines[2]!.split(" ").map(Number).sort((a, b) => a - b)).toEqual([10, 50, 1000]);
    expect(lines[3]).toBe("/home/app");
    expect(lines[4]).toBe("/work/dir");
    const st = await lstat(join(root.upper, "tmp/by-app"));
    expect([st.uid, st.gid]).toEqual([1000, 1000]);
    const wd = await lstat(join(root.upper, "work/dir"));
    expect([wd.uid, wd.gid]).toEqual([1000, 1000]);
    // Unprivileged: cannot write where root owns.
    const denied = await run(root, "echo x > /etc/owned-by-root", { ...u });
    expect(denied.exitCode).not.toBe(0);
  });

  it("root in RUN has Docker's capabilities: chown to any owner, mknod, setuid bits land in the layer", async () => {
    const root = await fresh();
    const r = await run(root, "touch /owned && chown 123:456 /owned && chmod 4755 /owned && mknod /null c 1 3 && echo done");
    expect(r.out).toContain("done");
    const entries = await changes(root, r.createdPaths);
    expect(entries.map((e) => [e.path, e.type, e.uid, e.gid, e.mode.toString(8)])).toEqual([
      ["null", "char", 0, 0, "644"],
      ["owned", "file", 123, 456, "4755"],
    ]);
    expect(entries[0]).toMatchObject({ devmajor: 1, devminor: 3 });
  });

  it("runs with a numeric uid:gid that is not in passwd", async () => {
    const root = await fresh();
    const u = await resolveUser(root.merged, "4242:4343");
    const r = await run(root, "id -u; id -g; echo $HOME", { ...u });
    expect(r.out.trim().split("\n")).toEqual(["4242", "4343", "/"]);
  });

  it("sets the hostname in its own UTS namespace", async () => {
    const root = await fresh();
    const r = await run(root, "hostname", { hostname: "buildkitsandbox" });
    expect(r.out.trim()).toBe("buildkitsandbox");
  });

  it("runs exec form directly; a missing program exits 127 as in a shell", async () => {
    const root = await fresh();
    const ok = await executor.runInRoot({ root: root.merged, args: ["echo", "exec", "form"], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network: "default" });
    expect(ok.tail).toBe("exec form");
    const missing = await executor.runInRoot({ root: root.merged, args: ["/no/such/program"], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network: "default" });
    expect(missing.exitCode).toBe(127);
    expect(missing.tail).toMatch(/no\/such\/program.*No such file/);
    const missingAsUser = await executor.runInRoot({ root: root.merged, args: ["/no/such/program"], env: [], cwd: "/", uid: 1000, gid: 1000, additionalGids: [], network: "default" });
    expect(missingAsUser.exitCode).toBe(127);
  });

  it("a working directory that is a file is refused", async () => {
    const root = await fresh();
    await mkdir(join(root.merged, "w"));
    await writeFile(join(root.merged, "w/file"), "");
    await expect(run(root, "true", { cwd: "/w/file/sub" })).rejects.toMatchObject({ code: "ROOTFS_NOT_A_DIRECTORY" });
  });

  it("mounts tmpfs and read-only binds for RUN --mount, and reports their mount points", async () => {
    const root = await fresh();
    const ctxDir = join(base, `ctx-${n}`);
    await mkdir(ctxDir);
    await writeFile(join(ctxDir, "input"), "from the context");
    const r = await run(root, "cat /mnt/ctx/input; echo x > /mnt/ctx/new && echo wrote-ro; echo t > /run/cache/t && cat /run/cache/t", {
      extraMounts: [
        { type: "bind", source: ctxDir, target: "/mnt/ctx", readonly: true },
        { type: "tmpfs", target: "/run/cache" },
      ],
    });
    expect(r.out).toContain("from the context");
    expect(r.out).not.toContain("wrote-ro");
    expect(r.out).toContain("t\n");
    expect(r.createdPaths).toEqual(expect.arrayContaining(["mnt", "mnt/ctx", "run", "run/cache"]));
    expect(await readdir(ctxDir)).toEqual(["input"]);
    expect(await changes(root, r.createdPaths)).toEqual([]);
  });

  it("gives the same layer on a copy-mode root", async () => {
    const layers: string[][] = [];
    for (const forceCopy of [false, true]) {
      const root = await mountRoot([lower], join(base, `s${n++}`), { forceCopy });
      mounted.push(root);
      expect(root.mode).toBe(forceCopy ? "copy" : "overlay");
      const r = await run(root, "rm /bin/wc; mkdir -p /opt/app; echo hi > /opt/app/x; chmod 600 /etc/group; ln -s x /opt/app/y");
      expect(r.exitCode).toBe(0);
      layers.push((await changes(root, r.createdPaths)).map((e) => `${e.path} ${e.type} ${e.mode.toString(8)}`));
    }
    expect(layers[0]).toEqual(["bin directory 755", "bin/.wh.wc file 0", "etc directory 755", "etc/group file 600", "opt directory 755", "opt/app directory 755", "opt/app/x file 644", "opt/app/y symlink 777"]);
    expect(layers[1]).toEqual(layers[0]);
  });

  it("never lets bwrap create mount points through an image symlink (which it would resolve against the host)", async () => {
    const root = await fresh();
    const victim = join(base, `victim-${n}`);
    await mkdir(victim);
    // bwrap builds mounts before pivoting: the host's / is then at /oldroot.
    await rm(join(root.merged, "etc"), { recursive: true });
    await symlink(`/oldroot${victim}`, join(root.merged, "etc"));
    const r = await run(root, "echo ran");
    expect(r.out).toContain("ran");
    expect(await readdir(victim)).toEqual([]);

    await rm(join(root.merged, "etc"));
    await mkdir(join(root.merged, "etc"));
    await rm(join(root.merged, "proc"), { recursive: true, force: true });
    await symlink(`/oldroot${victim}`, join(root.merged, "proc"));
    await expect(run(root, "true")).rejects.toMatchObject({ code: "SANDBOX_UNSAFE_MOUNT" });
    await expect(run(root, "true", { extraMounts: [{ type: "tmpfs", target: "/etc/x/../../proc/y" }] })).rejects.toMatchObject({ code: "SANDBOX_UNSAFE_MOUNT" });
    expect(await readdir(victim)).toEqual([]);
  });

  it("an abort kills the sandbox", async () => {
    const root = await fresh();
    const ac = new AbortController();
    const p = executor.runInRoot({
      root: root.merged,
      args: ["/bin/sh", "-c", "echo started; sleep 600"],
      env: [],
      cwd: "/",
      uid: 0,
      gid: 0,
      additionalGids: [],
      network: "default",
      signal: ac.signal,
      onOutput: (_s, c) => {
        if (c.toString().includes("started")) ac.abort();
      },
    });
    await expect(p).rejects.toMatchObject({ code: "SANDBOX_ABORTED" });
  });
});
