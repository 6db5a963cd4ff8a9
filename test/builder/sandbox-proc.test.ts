/**
 * A RUN runs as real root, so a writable /proc/sys would change the host's kernel
 * settings. The sandbox gives /proc/sys, /proc/sysrq-trigger, /proc/irq and
 * /proc/bus read-only, masks /proc/kcore, keys, timer_list, latency_stats,
 * sched_debug, scsi and acpi (runc's defaults), and /sys is read-only; a privileged
 * step (RUN --security=insecure) sees them as the host has them, as in Docker.
 */
import { existsSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BwrapExecutor } from "../../src/builder/sandbox/bwrap.js";
import type { RunSpec } from "../../src/builder/sandbox/index.js";
import { haveBusyboxStatic, haveTool, isRoot, makeBusyboxRoot } from "../../testdata/builder/fixtures.js";

const SYSCTL = "/proc/sys/fs/lease-break-time";
const ready = isRoot && haveTool("bwrap") && haveBusyboxStatic() && existsSync(SYSCTL);
const executor = new BwrapExecutor();

describe.skipIf(!ready)("the sandbox's /proc and /sys (needs root, bwrap, busybox-static)", () => {
  let base: string;
  let root: string;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-sandbox-proc-"));
    root = join(base, "root");
    await makeBusyboxRoot(root);
    for (const a of ["grep", "head", "sort", "cut"]) await symlink("busybox", join(root, "bin", a));
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  async function run(script: string, extra: Partial<RunSpec> = {}) {
    let out = "";
    const res = await executor.runInRoot({ root, args: ["/bin/sh", "-c", script], env: [], cwd: "/", uid: 0, gid: 0, additionalGids: [], network: "none", onOutput: (_s, c) => (out += c.toString()), ...extra });
    return { ...res, out };
  }

  it("a RUN cannot change a host sysctl: the write fails and the host's value is unchanged", async () => {
    const before = (await readFile(SYSCTL, "utf8")).trim();
    const next = String(Number(before) + 1);
    try {
      const r = await run(`echo ${next} > ${SYSCTL}; echo "rc=$?"; cat ${SYSCTL}`);
      expect(r.out).toMatch(/Read-only file system/);
      expect(r.out).toMatch(/rc=[1-9]/);
      expect((await readFile(SYSCTL, "utf8")).trim()).toBe(before);
    } finally {
      // A sandbox that let the write through must not leave the host changed.
      await writeFile(SYSCTL, `${before}\n`);
    }
  });

  it("/proc/sys, /proc/irq, /proc/bus (and /proc/sysrq-trigger where the kernel has it) are read-only mounts; sysctls still answer for the step's namespaces", async () => {
    const r = await run("cut -d' ' -f5,6 /proc/self/mountinfo; echo hostname=$(cat /proc/sys/kernel/hostname); echo ifaces=$(ls /proc/sys/net/ipv4/conf)", { hostname: "step-host" });
    const mounts = new Map(r.out.split("\n").filter((l) => l.startsWith("/")).map((l) => [l.split(" ")[0]!, l.split(" ")[1]!]));
    for (const p of ["/proc/sys", "/proc/irq", "/proc/bus", "/proc/sysrq-trigger"].filter((p) => existsSync(p))) {
      expect(mounts.get(p), p).toMatch(/^ro,/);
    }
    expect(r.out).toContain("hostname=step-host");
    expect(r.out).toContain("ifaces=all default lo\n");
  });

  it("masks /proc/kcore, keys, timer_list, latency_stats, sched_debug (empty files) and scsi, acpi (empty read-only directories)", async () => {
    const present = ["kcore", "keys", "timer_list", "latency_stats", "sched_debug", "scsi", "acpi"].filter((n) => existsSync(`/proc/${n}`));
    expect(present.length).toBeGreaterThan(0);
    const probe = present
      .map((n) => (statSync(`/proc/${n}`).isDirectory() ? `echo ${n}=$(ls -A /proc/${n} | wc -l); touch /proc/${n}/x 2>/dev/null && echo ${n}-writable` : `echo ${n}=$(cat /proc/${n} | wc -c)`))
      .join("; ");
    const r = await run(probe);
    for (const n of present) expect(r.out).toContain(`${n}=0\n`);
    expect(r.out).not.toMatch(/-writable/);
  });

  it("/sys is read-only and what the step tried to write there is not in its root", async () => {
    const r = await run("mkdir /sys/x 2>&1; echo data > /sys/y 2>&1; echo done");
    expect(r.out).toMatch(/Read-only file system/);
    expect(r.out).toContain("done");
    expect(existsSync(join(root, "sys/x"))).toBe(false);
    expect(existsSync(join(root, "sys/y"))).toBe(false);
  });

  it("a privileged step (RUN --security=insecure) has /proc/sys as the host has it, as in Docker", async () => {
    const r = await run("cut -d' ' -f5,6 /proc/self/mountinfo | grep '^/proc/sys ' || echo no-separate-mount", { privileged: true });
    expect(r.out).toContain("no-separate-mount");
  });
});
