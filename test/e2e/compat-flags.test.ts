/**
 * docker build's and kaniko's flags that change what a build does, end to end through
 * the CLI on the busybox base in a real registry, with real bubblewrap.
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { captureIO } from "../dockerfile/cli-io.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { haveRegistry } from "../helpers/registry.js";
import { have, isRoot, run } from "../helpers/tools.js";

const ready = isRoot && haveRegistry() && have("bwrap") && have("umoci");

describe.skipIf(!ready)("compatibility flags end to end (needs root, bwrap, docker-registry, umoci)", () => {
  const fx = useBusyboxRegistry("e2e-compat");

  /** Runs `ocibuild build` on a context holding `dockerfile`; the exit code, stderr and the unpacked rootfs. */
  async function cli(name: string, dockerfile: string, flags: string[]) {
    const ctx = join(fx.work, name);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), dockerfile);
    const layout = join(fx.work, `${name}-img`);
    const cap = captureIO({ cwd: fx.work });
    cap.io.env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const code = await main(["build", "--no-push", "--progress", "plain", "--cache-dir", fx.cacheDir, "-o", `oci:${layout}:v1`, ...flags, ctx], cap.io);
    if (code !== 0) return { code, stderr: cap.stderr(), root: "" };
    await run("umoci", ["unpack", "--image", `${layout}:v1`, join(fx.work, `${name}-bundle`)]);
    return { code, stderr: cap.stderr(), root: join(fx.work, `${name}-bundle`, "rootfs") };
  }

  it("--registry-map pulls a base from the mapped registry; without it the original is asked", async () => {
    const mapped = fx.base.replace(fx.reg.host, "registry.invalid");
    const dockerfile = `FROM ${mapped}\nRUN echo mapped > /out\n`;
    const r = await cli("map", dockerfile, ["--registry-map", `registry.invalid=${fx.reg.host}`]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(await readFile(join(r.root, "out"), "utf8")).toBe("mapped\n");
    const without = await cli("nomap", dockerfile, []);
    expect(without.code).toBe(1);
    expect(without.stderr).toMatch(/registry\.invalid/);
  });

  it("--skip-default-registry-fallback fails when the mirror lacks the image, instead of asking the original", async () => {
    const dockerfile = `FROM ${fx.reg.host}/not/here:latest\n`;
    const r = await cli("nofallback", dockerfile, ["--registry-map", `${fx.reg.host}=127.0.0.1:1`, "--skip-default-registry-fallback"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/127\.0\.0\.1:1/);
  });

  it("--add-host adds lines to RUN's /etc/hosts, after the host's own, and leaves them out of the image", async () => {
    const dockerfile = `FROM ${fx.base}\nRUN cat /etc/hosts > /hosts.seen\n`;
    const r = await cli("addhost", dockerfile, ["--add-host", "db.internal:10.1.2.3", "--add-host=v6.internal=fd00::1"]);
    expect(r.stderr).not.toMatch(/error\[/);
    const seen = await readFile(join(r.root, "hosts.seen"), "utf8");
    const host = await readFile("/etc/hosts", "utf8");
    expect(seen.startsWith(host)).toBe(true);
    expect(seen.slice(host.length).trim().split("\n")).toEqual(["10.1.2.3\tdb.internal", "fd00::1\tv6.internal"]);
    // The generated file is a mount, never part of the layer.
    await expect(readFile(join(r.root, "etc", "hosts"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("--shm-size mounts a tmpfs of that size at /dev/shm", async () => {
    const dockerfile = `FROM ${fx.base}\nRUN df -k /dev/shm | tail -1 > /shm\n`;
    const r = await cli("shm", dockerfile, ["--shm-size", "96m"]);
    expect(r.stderr).not.toMatch(/error\[/);
    const fields = (await readFile(join(r.root, "shm"), "utf8")).trim().split(/\s+/);
    expect(fields[0]).toBe("tmpfs");
    expect(Number(fields[1])).toBe(96 * 1024);
  });

  it("--ulimit sets RUN's resource limits, soft and hard", async () => {
    const dockerfile = `FROM ${fx.base}\nRUN echo "$(ulimit -Sn) $(ulimit -Hn) $(ulimit -Ss)" > /limits\n`;
    const r = await cli("ulimit", dockerfile, ["--ulimit", "nofile=321:654", "--ulimit", "stack=-1"]);
    expect(r.stderr).not.toMatch(/error\[/);
    expect(await readFile(join(r.root, "limits"), "utf8")).toBe("321 654 unlimited\n");
  });

  it("--no-push-cache reads --cache-repo but pushes no entry to it", async () => {
    const dockerfile = `FROM ${fx.base}\nRUN echo $RANDOM$RANDOM > /r\n`;
    const tags = async (repo: string) => (await fetch(`http://${fx.reg.host}/v2/${repo}/tags/list`)).status;
    const off = await cli("nopushcache", dockerfile, ["--cache-repo", `${fx.reg.host}/cache-off`, "--no-push-cache"]);
    expect(off.code).toBe(0);
    expect(await tags("cache-off")).toBe(404);
    const on = await cli("pushcache", dockerfile.replace("/r", "/r2"), ["--cache-repo", `${fx.reg.host}/cache-on`]);
    expect(on.code).toBe(0);
    expect(await tags("cache-on")).toBe(200);
  });
});
