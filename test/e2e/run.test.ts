/**
 * `ocibuild run` end to end on busybox images built by ocibuild into a real
 * registry: ENTRYPOINT/CMD composition against Docker's rules, the image's Env,
 * User and WorkingDir, the exit status, bind mounts and --read-only, image IDs
 * from --iidfile, archives, --keep, --healthcheck, and no mount left behind.
 */
import { spawn } from "node:child_process";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { build } from "../../src/api.js";
import { formatPlatform, hostPlatform } from "../../src/oci/platform.js";
import { runImage } from "../../src/run/run.js";
import { haveRegistry } from "../helpers/registry.js";
import { useBusyboxRegistry } from "../helpers/busybox-registry.js";
import { cli, have, isRoot } from "../helpers/tools.js";

const BIN = resolve(__dirname, "../../bin/ocibuild.cjs");
const ready = isRoot && haveRegistry() && have("bwrap");

/** Overlay mounts under `dir` in this process's mount table. */
async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile("/proc/self/mounts", "utf8");
  return text.split("\n").filter((l) => l.split(" ")[1]?.startsWith(dir));
}

describe.skipIf(!ready)("ocibuild run (needs root, bwrap, docker-registry)", () => {
  const f = useBusyboxRegistry("run");
  let n = 0;
  /** Build a one-off image on the busybox base from Dockerfile lines; returns its reference. */
  async function image(lines: string[], extra: Record<string, string> = {}): Promise<string> {
    const ctx = join(f.work, `ctx-${++n}`);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), [`FROM ${f.base}`, ...lines, ""].join("\n"));
    for (const [name, text] of Object.entries(extra)) await writeFile(join(ctx, name), text);
    const ref = `${f.reg.host}/test/run${n}:v1`;
    await build({ context: ctx, tags: [ref], cacheDir: f.cacheDir });
    return ref;
  }
  const run = (args: string[]) => cli(["run", "--cache-dir", f.cacheDir, ...args]);

  it.each([
    // [ENTRYPOINT/CMD lines, run flags, command, expected output]
    ["exec CMD", ['CMD ["echo", "cmd"]'], [], [], "cmd"],
    ["shell CMD", ["CMD echo shell $HOME"], [], [], "shell /root"],
    ["exec ENTRYPOINT + exec CMD", ['ENTRYPOINT ["echo", "ep"]', 'CMD ["default"]'], [], [], "ep default"],
    ["command replaces CMD", ['ENTRYPOINT ["echo", "ep"]', 'CMD ["default"]'], [], ["given", "args"], "ep given args"],
    ["command without ENTRYPOINT", ['CMD ["echo", "cmd"]'], [], ["echo", "given"], "given"],
    ["shell ENTRYPOINT ignores CMD and command", ["ENTRYPOINT echo shell-ep", 'CMD ["ignored"]'], [], ["also-ignored"], "shell-ep"],
    ["--entrypoint drops the image's CMD", ['ENTRYPOINT ["echo", "ep"]', 'CMD ["default"]'], ["--entrypoint", "echo"], [], ""],
    ["--entrypoint with a command", ['ENTRYPOINT ["echo", "ep"]', 'CMD ["default"]'], ["--entrypoint", "echo"], ["x", "y"], "x y"],
    ["--entrypoint '' clears it", ['ENTRYPOINT ["false"]'], ["--entrypoint", ""], ["echo", "cleared"], "cleared"],
    ["empty CMD with ENTRYPOINT", ['ENTRYPOINT ["echo", "only-ep"]', "CMD []"], [], [], "only-ep"],
  ])("composes ENTRYPOINT and CMD as docker run: %s", async (_name, lines, flags, command, expected) => {
    const ref = await image(lines);
    const r = await run([...flags, ref, ...command]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${expected}\n`);
  }, 60_000);

  it("fails with RUN_NO_COMMAND when there is nothing to run", async () => {
    const ref = await image(['ENTRYPOINT ["echo"]']);
    const r = await run(["--entrypoint", "", ref]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no ENTRYPOINT or CMD and no command was given/);
  }, 60_000);

  it("honours the image's Env, User and WorkingDir, and -e, --env-file, -u and -w over them", async () => {
    const ref = await image(["ENV A=image B=image", "RUN echo svc:x:1234:1234::/home/svc:/bin/sh >> /etc/passwd", "USER svc", "WORKDIR /srv/app", 'CMD ["sh", "-c", "echo $A $B $C $(id -u) $(pwd) $HOME"]']);
    const dflt = await run([ref]);
    expect(dflt.stdout).toBe("image image 1234 /srv/app /home/svc\n");
    const envFile = join(f.work, "env.list");
    await writeFile(envFile, "# comment\n\nC=from-file\n");
    const over = await cli(["run", "--cache-dir", f.cacheDir, "-e", "A=flag", "-e", "HOSTVAR", "--env-file", envFile, "-u", "0", "-w", "/tmp", ref], { env: { HOSTVAR: "x" } });
    expect(over.stdout).toBe("flag image from-file 0 /tmp /root\n");
  }, 60_000);

  it("exits with the command's status", async () => {
    const ref = await image(['CMD ["sh", "-c", "exit 42"]']);
    expect((await run([ref])).code).toBe(42);
    expect((await run([ref, "sh", "-c", "exit 3"])).code).toBe(3);
    expect((await run([ref, "no-such-command"])).code).toBe(127);
  }, 60_000);

  it("bind-mounts a host directory (read-write and :ro) and keeps the root read-only with --read-only", async () => {
    const ref = await image(['CMD ["true"]']);
    const host = join(f.work, "bind");
    await mkdir(host, { recursive: true });
    await writeFile(join(host, "in.txt"), "from host\n");
    const rw = await run(["-v", `${host}:/data`, ref, "sh", "-c", "cat /data/in.txt && echo written > /data/out.txt"]);
    expect(rw.stdout).toBe("from host\n");
    expect(await readFile(join(host, "out.txt"), "utf8")).toBe("written\n");
    const ro = await run(["-v", `${host}:/data:ro`, ref, "sh", "-c", "echo x > /data/ro.txt"]);
    expect(ro.code).not.toBe(0);
    const readOnly = await run(["--read-only", "--tmpfs", "/scratch", ref, "sh", "-c", "echo ok > /scratch/f && cat /scratch/f && touch /etc/x"]);
    expect(readOnly.stdout).toBe("ok\n");
    expect(readOnly.stderr).toMatch(/Read-only file system/);
    expect(readOnly.code).not.toBe(0);
    // Without --read-only the same write works, and is thrown away at exit.
    expect((await run([ref, "sh", "-c", "touch /etc/x"])).code).toBe(0);
    expect((await run([ref, "test", "-e", "/etc/x"])).code).toBe(1);
  }, 60_000);

  it("runs the image an --iidfile names, from the local content store, and from oci:, docker-archive: and oci-archive: files", async () => {
    const ctx = join(f.work, "ctx-iid");
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, "Dockerfile"), `FROM ${f.base}\nRUN echo built > /built\nCMD ["cat", "/built"]\n`);
    const iid = join(f.work, "iid.txt");
    const layout = join(f.work, "layout");
    const archive = join(f.work, "image.tar");
    const ociArchive = join(f.work, "image.oci.tar");
    const b = await cli(["--no-push", "--iidfile", iid, "--cache-dir", f.cacheDir, "-t", "app:v1", "-o", `oci:${layout}:v1`, "-o", `docker-archive:${archive}`, "-o", `oci-archive:${ociArchive}:v1`, ctx]);
    expect(b.code, b.stderr).toBe(0);
    const id = (await readFile(iid, "utf8")).trim();
    for (const name of [id, `oci:${layout}:v1`, `docker-archive:${archive}`, `oci-archive:${ociArchive}:v1`, `oci-archive:${ociArchive}`]) {
      const r = await run([name]);
      expect(r.stdout, `${name}: ${r.stderr}`).toBe("built\n");
    }
    const wrong = await run(["--platform", "linux/s390x", `oci:${layout}:v1`]);
    expect(wrong.stderr).toContain(`is a ${formatPlatform(hostPlatform())} image, not linux/s390x`);
    expect(wrong.stderr).toMatch(/^error\[PLATFORM_NOT_FOUND\]/);
    const missing = await run([`sha256:${"0".repeat(64)}`]);
    expect(missing.stderr).toMatch(/no image sha256:0+ in the local content store/);
    // A build that never needed its base's files never pulled them: the ID names an incomplete image.
    const fresh = join(f.work, "fresh-cache");
    const ctx2 = join(f.work, "ctx-config-only");
    await mkdir(ctx2, { recursive: true });
    await writeFile(join(ctx2, "Dockerfile"), `FROM ${f.base}\nENV ONLY=config\n`);
    const iid2 = join(f.work, "iid2.txt");
    expect((await cli(["--no-push", "--iidfile", iid2, "--cache-dir", fresh, ctx2])).code).toBe(0);
    const incomplete = await cli(["run", "--cache-dir", fresh, (await readFile(iid2, "utf8")).trim(), "true"]);
    expect(incomplete.stderr).toMatch(/error\[RUN_IMAGE_INCOMPLETE\].*not in the local content store/);
    expect(await mountsUnder(fresh)).toEqual([]);
  }, 120_000);

  it("keeps the upper layer with --keep", async () => {
    const ref = await image(['CMD ["sh", "-c", "echo kept > /made-here"]']);
    const keep = join(f.work, "kept");
    const r = await run(["--keep", keep, ref]);
    expect(r.code).toBe(0);
    expect(await readFile(join(keep, "made-here"), "utf8")).toBe("kept\n");
    // The library names its option, the CLI the flag.
    const again = await run(["--keep", keep, ref]);
    expect(again.stderr).toContain(`error[RUN_KEEP_EXISTS]: --keep ${keep}: the directory already exists\n`);
    const err = await runImage({ image: ref, cacheDir: f.cacheDir, keep }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "RUN_KEEP_EXISTS", message: `the keep option (${JSON.stringify(keep)}): the directory already exists` });
  }, 60_000);

  it("--healthcheck reports healthy, or unhealthy with a non-zero exit", async () => {
    const good = await image(['HEALTHCHECK --interval=1s --retries=2 CMD test -e /tmp/ready', 'CMD ["sh", "-c", "touch /tmp/ready; sleep 30"]']);
    const g = await run(["--healthcheck", good]);
    expect(g.stderr).toMatch(/health check: healthy/);
    expect(g.code).toBe(0);
    const bad = await image(['HEALTHCHECK --interval=1s --retries=2 CMD echo not ready; exit 1', 'CMD ["sleep", "30"]']);
    const b = await run(["--healthcheck", bad]);
    expect(b.stderr).toMatch(/health check: unhealthy after 2 check\(s\)\nnot ready/);
    expect(b.code).toBe(1);
    const exits = await image(["HEALTHCHECK --interval=1s --retries=3 CMD false", 'CMD ["sh", "-c", "exit 0"]']);
    const e = await run(["--healthcheck", exits]);
    expect(e.stderr).toMatch(/health check: unhealthy after \d check\(s\)\nthe command exited before the health check passed/);
    expect(e.code).toBe(1);
    const none = await image(['CMD ["sleep", "30"]']);
    expect((await run(["--healthcheck", none])).stderr).toMatch(/^error\[RUN_NO_HEALTHCHECK\]/);
  }, 60_000);

  it("leaves nothing mounted after a run, a failed run, or a stop (library: abort)", async () => {
    const ref = await image(['CMD ["sleep", "30"]']);
    expect((await run([ref, "true"])).code).toBe(0);
    expect((await run([ref, "false"])).code).toBe(1);
    const ac = new AbortController();
    const started = new Promise<void>((done) => {
      void runImage({ image: ref, cacheDir: f.cacheDir, signal: ac.signal, onStart: () => done() }).then((r) => results.push(r.exitCode));
    });
    const results: number[] = [];
    await started;
    ac.abort(Object.assign(new Error("stop"), { signal: "SIGINT" }));
    await expect.poll(() => results.length, { timeout: 10_000 }).toBe(1);
    expect(results[0]).toBe(130);
    expect(await mountsUnder(f.cacheDir)).toEqual([]);
    expect(await readdir(join(f.cacheDir, "tmp"))).toEqual([]);
  }, 60_000);

  it("passes Ctrl-C (SIGINT to the CLI) to the command, exits with its status, and leaves nothing mounted", async () => {
    const ref = await image(['CMD ["true"]']);
    const child = spawn(process.execPath, [BIN, "run", "--cache-dir", f.cacheDir, ref, "sh", "-c", "echo started; exec sleep 30"], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    const exited = new Promise<number | null>((done) => child.on("close", (code) => done(code)));
    await expect.poll(() => out, { timeout: 20_000 }).toBe("started\n");
    const t0 = Date.now();
    child.kill("SIGINT");
    expect(await exited).toBe(130);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await mountsUnder(f.cacheDir)).toEqual([]);
    expect(await readdir(join(f.cacheDir, "tmp"))).toEqual([]);
  }, 60_000);

  it("stops the command after --timeout with exit status 124", async () => {
    const ref = await image(['CMD ["sleep", "30"]']);
    const t0 = Date.now();
    const r = await run(["--timeout", "1s", ref]);
    expect(r.code).toBe(124);
    expect(r.stderr).toMatch(/stopped after --timeout 1s/);
    expect(Date.now() - t0).toBeLessThan(8_000);
    expect(await mountsUnder(f.cacheDir)).toEqual([]);
  }, 60_000);

  it("-i passes stdin, -t gives the command the terminal, --network none leaves only lo", async () => {
    const ref = await image(['CMD ["true"]']);
    const child = spawn(process.execPath, [BIN, "run", "--cache-dir", f.cacheDir, "-i", ref, "sh", "-c", "tr a-z A-Z; test -t 0 || echo no-tty"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stdin.end("piped in\n");
    expect(await new Promise((done) => child.on("close", done))).toBe(0);
    expect(out).toBe("PIPED IN\nno-tty\n");
    if (have("script")) {
      // script(1) gives the CLI a pseudo-terminal; -t hands it to the command.
      const cmd = `${process.execPath} ${BIN} run --cache-dir ${f.cacheDir} -t ${ref} sh -c 'test -t 0 && test -t 1 && echo has-tty'`;
      const t = await new Promise<string>((done) => {
        const c = spawn("script", ["-qec", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "inherit"] });
        let o = "";
        c.stdout.setEncoding("utf8").on("data", (d: string) => (o += d));
        c.on("close", () => done(o));
        c.stdin.end();
      });
      expect(t).toContain("has-tty");
    }
    const none = await run(["--network", "none", ref, "cat", "/proc/net/dev"]);
    const ifaces = none.stdout.split("\n").slice(2).filter(Boolean).map((l) => l.trim().split(":")[0]);
    expect(ifaces).toEqual(["lo"]);
  }, 60_000);
});
