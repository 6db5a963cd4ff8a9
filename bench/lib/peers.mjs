// The builders under test, behind one shape:
//   { name, version, note?, reset(scenario), build(scenario, ref, base) -> { ms, parts, steps? }, stop() }
// `reset` makes the next build cold (nothing of this scenario or its base cached);
// `build` builds the scenario's context and pushes the image to `ref` in the harness's registry.
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { aptInstall, run, say, which } from "./util.mjs";

/** Unmounts anything still mounted under `dir` (deepest first), then removes it. */
async function removeTree(dir) {
  const mounts = (await readFile("/proc/self/mounts", "utf8"))
    .split("\n")
    .map((l) => l.split(" ")[1])
    .filter((m) => m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run("umount", ["-l", m], { allowFail: true });
  await rm(dir, { recursive: true, force: true });
}

const BENCH_USER = "ocibench";

/**
 * The plain user the rootless peer builds as: made once with useradd, with a
 * subordinate id range (the first free one after those in /etc/subuid and /etc/subgid).
 * Returns undefined where it cannot be made (not root, no useradd, no newuidmap).
 */
export async function benchUser(home) {
  if (process.getuid?.() !== 0 || !(await which("useradd")) || !(await which("newuidmap"))) return undefined;
  const id = async () => (await run("id", ["-u", BENCH_USER], { allowFail: true })).stdout.trim();
  if ((await id()) === "") {
    let end = 300000;
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      const text = existsSync(f) ? await readFile(f, "utf8") : "";
      for (const line of text.split("\n")) {
        const [, start, count] = line.split(":");
        if (start !== undefined && count !== undefined) end = Math.max(end, Number(start) + Number(count));
      }
    }
    await run("useradd", ["-M", "-d", home, "-s", "/bin/sh", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", BENCH_USER]);
    await run("usermod", ["--add-subuids", `${end}-${end + 65535}`, "--add-subgids", `${end}-${end + 65535}`, BENCH_USER]);
  }
  const uid = Number(await id());
  const gid = Number((await run("id", ["-g", BENCH_USER])).stdout.trim());
  await mkdir(home, { recursive: true });
  await run("chown", [`${uid}:${gid}`, home]);
  return { uid, gid, home };
}

/**
 * ocibuild, as a user runs it: a fresh CLI process per build (bin/ocibuild, the command npm
 * installs; under --profile, node --cpu-prof bin/ocibuild.cjs).
 * With `opts.user` ({ uid, gid, home }) it is the "rootless" peer: the same CLI run by
 * that plain user through setpriv, building in its own user namespace.
 */
export async function ocibuildPeer(repoRoot, work, opts) {
  const dirs = new Map();
  const name = opts.user ? "rootless" : "ocibuild";
  const cacheOf = (s) => join(work, name, s.id);
  const asUser = opts.user
    ? (args) => ["setpriv", ["--reuid", String(opts.user.uid), "--regid", String(opts.user.gid), "--init-groups", "--", ...args]]
    : (args) => [args[0], args.slice(1)];
  const env = opts.user ? { HOME: opts.user.home, PATH: process.env.PATH } : undefined;
  const version = (await run(...asUser([join(repoRoot, "bin/ocibuild"), "--version"]), { allowFail: true, env })).stdout.trim();
  const timeBin = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;
  return {
    name,
    version,
    async reset(s) {
      await removeTree(cacheOf(s));
    },
    async build(s, ref, base, tag) {
      const cacheDir = cacheOf(s);
      dirs.set(s.id, cacheDir);
      if (opts.user) {
        await mkdir(cacheDir, { recursive: true });
        await run("chown", [`${opts.user.uid}:${opts.user.gid}`, cacheDir]);
      }
      const nodeArgs = [];
      if (opts.profileDir && tag) {
        const d = join(opts.profileDir, tag);
        await mkdir(d, { recursive: true });
        nodeArgs.push("--cpu-prof", `--cpu-prof-dir=${d}`);
      }
      const cli = nodeArgs.length ? [process.execPath, ...nodeArgs, join(repoRoot, "bin/ocibuild.cjs")] : [join(repoRoot, "bin/ocibuild")];
      const args = [...cli, "build", "--progress", "json", "--cache-dir", cacheDir, "--build-arg", `BASE=${base}`, "-t", ref, s.dir];
      // Each JSON event line is stamped when it arrives, so a step splits into the time
      // before its layer starts to be written (cache key, copy or RUN, snapshot walk),
      // writing the layer (tar+gzip+sha256: from the first layer-write event, sent after
      // 4 MiB, to the last), and after it; the rest of the build is start-up, base
      // resolution and the push.
      const t0 = performance.now();
      const events = [];
      let partial = "";
      const onStdout = (d) => {
        const now = performance.now() - t0;
        const text = partial + d;
        const lines = text.split("\n");
        partial = lines.pop();
        for (const line of lines) if (line.startsWith("{")) events.push([now, line]);
      };
      // Under GNU time where it is installed: the peak RSS of the build's largest process.
      const rssFile = join(work, `${name}-maxrss.txt`);
      const [cmd, cmdArgs] = asUser(args);
      const r = timeBin ? await run(timeBin, ["-f", "%M", "-o", rssFile, cmd, ...cmdArgs], { onStdout, env }) : await run(cmd, cmdArgs, { onStdout, env });
      const maxRssKiB = timeBin ? Number((await readFile(rssFile, "utf8")).trim().split("\n").pop()) : undefined;
      if (partial.startsWith("{")) events.push([performance.now() - t0, partial]);
      const steps = [];
      const open = new Map();
      let pushed;
      let lastStepEnd = 0;
      for (const [at, line] of events) {
        let e;
        try {
          e = JSON.parse(line);
        } catch {
          continue;
        }
        const key = `${e.stage}/${e.step}`;
        if (e.type === "step-start") open.set(key, { start: at });
        if (e.type === "output" && open.has(key)) open.get(key).lastOutput = at;
        if (e.type === "layer-write") {
          const o = open.get(key);
          if (o) {
            o.firstLayerWrite ??= at;
            if (e.done) o.layerDone = at;
          }
        }
        if (e.type === "step-end") {
          const o = open.get(key) ?? { start: at };
          const ms = (x) => (x === undefined ? undefined : Math.round(x));
          steps.push({
            stage: e.stage,
            instruction: e.instruction,
            cached: e.cached,
            seconds: e.seconds,
            atMs: { start: ms(o.start), lastOutput: ms(o.lastOutput), firstLayerWrite: ms(o.firstLayerWrite), layerDone: ms(o.layerDone), end: ms(at) },
          });
          lastStepEnd = Math.max(lastStepEnd, at);
        }
        if (e.type === "result") pushed = e.digest;
      }
      const firstStep = steps.length ? Math.min(...steps.map((s) => s.atMs.start)) : 0;
      return { ms: r.ms, parts: { build: r.ms, beforeFirstStep: Math.round(firstStep), afterLastStep: Math.round(r.ms - lastStepEnd), maxRssKiB }, steps, digest: pushed };
    },
    async stop() {},
  };
}

/** buildah bud --layers --isolation chroot, overlay storage in its own root; then buildah push. */
export async function buildahPeer(work) {
  let bin = await which("buildah");
  if (!bin) {
    say("installing buildah (apt-get)");
    try {
      if (await aptInstall("buildah")) bin = await which("buildah");
    } catch (e) {
      return { name: "buildah", unavailable: `buildah is not installed and apt-get failed: ${e.message.split("\n")[0]}` };
    }
    if (!bin) return { name: "buildah", unavailable: "buildah is not installed (run as root, or apt-get install buildah)" };
  }
  const version = (await run(bin, ["--version"], { allowFail: true })).stdout.trim();
  const rootOf = (s) => join(work, "buildah", s.id);
  const g = (s) => ["--root", join(rootOf(s), "root"), "--runroot", join(rootOf(s), "run"), "--storage-driver", "overlay"];
  // A quick check that it can build here at all (overlay in this kernel, chroot isolation).
  const probe = join(work, "buildah-probe");
  await removeTree(probe);
  await mkdir(join(probe, "ctx"), { recursive: true });
  await writeFile(join(probe, "ctx/Dockerfile"), "FROM scratch\nCOPY Dockerfile /x\n");
  const ok = await run(bin, ["--root", join(probe, "root"), "--runroot", join(probe, "run"), "--storage-driver", "overlay", "bud", "--layers", "--isolation", "chroot", "-t", "localhost/probe:1", join(probe, "ctx")], { allowFail: true });
  await run(bin, ["--root", join(probe, "root"), "--runroot", join(probe, "run"), "--storage-driver", "overlay", "rmi", "-a", "-f"], { allowFail: true });
  await removeTree(probe);
  if (ok.code !== 0) return { name: "buildah", unavailable: `buildah cannot build here: ${(ok.stderr || ok.stdout).trim().split("\n").slice(-2).join(" ")}` };
  return {
    name: "buildah",
    version,
    async reset(s) {
      if (existsSync(rootOf(s))) await run(bin, [...g(s), "rmi", "-a", "-f"], { allowFail: true });
      await removeTree(rootOf(s));
    },
    async build(s, ref, base) {
      const b = await run(bin, [...g(s), "bud", "--layers", "--isolation", "chroot", "--tls-verify=false", "--build-arg", `BASE=${base}`, "-f", join(s.dir, "Dockerfile"), "-t", ref, s.dir]);
      const p = await run(bin, [...g(s), "push", "--tls-verify=false", ref, `docker://${ref}`]);
      return { ms: b.ms + p.ms, parts: { build: b.ms, push: p.ms } };
    },
    async stop() {},
  };
}

/**
 * BuildKit through buildctl: BUILDKIT_HOST if set, else a buildkitd from PATH started
 * here on a unix socket with the harness's registry marked http/insecure. Cold = after
 * `buildctl prune --all` (the daemon itself stays warm: BuildKit's strongest case).
 */
export async function buildkitPeer(work, registryHost) {
  const buildctl = await which("buildctl");
  if (!buildctl) return { name: "buildkit", unavailable: "buildctl is not on PATH (and BUILDKIT_HOST needs it too)" };
  let addr = process.env.BUILDKIT_HOST;
  let daemon;
  let alive = async () => {};
  const notes = [];
  const dir = join(work, "buildkit");
  if (!addr) {
    const buildkitd = await which("buildkitd");
    if (!buildkitd) return { name: "buildkit", unavailable: "no BUILDKIT_HOST and no buildkitd on PATH" };
    await removeTree(dir);
    await mkdir(dir, { recursive: true });
    const runtime = (await which("runc")) ?? (await which("crun"));
    const config = `[worker.oci]\n  enabled = true\n  gc = false\n${runtime ? `  binary = "${runtime}"\n` : ""}[worker.containerd]\n  enabled = false\n[registry."${registryHost}"]\n  http = true\n  insecure = true\n`;
    await writeFile(join(dir, "buildkitd.toml"), config);
    addr = `unix://${join(dir, "buildkitd.sock")}`;
    const { spawn } = await import("node:child_process");
    const start = async () => {
      let log = "";
      const d = spawn(buildkitd, ["--config", join(dir, "buildkitd.toml"), "--root", join(dir, "root"), "--addr", addr], { stdio: ["ignore", "pipe", "pipe"] });
      d.stdout.on("data", (x) => (log = (log + x).slice(-8000)));
      d.stderr.on("data", (x) => (log = (log + x).slice(-8000)));
      for (let i = 0; i < 150 && d.exitCode === null; i++) {
        const r = await run(buildctl, ["--addr", addr, "debug", "workers"], { allowFail: true });
        if (r.code === 0 && r.stdout.trim().split("\n").length > 1) return d;
        await new Promise((res) => setTimeout(res, 200));
      }
      d.kill("SIGKILL");
      throw new Error(`buildkitd did not start: ${log.trim().split("\n").slice(-3).join(" ")}`);
    };
    try {
      daemon = await start();
    } catch (e) {
      return { name: "buildkit", unavailable: e.message };
    }
    // Something outside the harness may stop the daemon (e.g. a cleanup that signals every
    // buildkitd): start it again, and say so in the results.
    alive = async () => {
      if (daemon.exitCode === null && daemon.signalCode === null) return;
      notes.push(`buildkitd exited (${daemon.exitCode ?? daemon.signalCode}) outside the harness's control and was restarted`);
      say(notes[notes.length - 1]);
      daemon = await start();
    };
    say(`buildkitd started on ${addr}`);
  }
  const version = (await run(buildctl, ["--version"], { allowFail: true })).stdout.trim();
  const ctl = (args, o) => run(buildctl, ["--addr", addr, ...args], o);
  return {
    name: "buildkit",
    version: daemon ? `${version} (buildkitd started by the harness)` : `${version} (BUILDKIT_HOST=${addr})`,
    notes,
    async reset() {
      await alive();
      await ctl(["prune", "--all"], { allowFail: true });
    },
    async build(s, ref, base) {
      await alive();
      const r = await ctl([
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        `context=${s.dir}`,
        "--local",
        `dockerfile=${s.dir}`,
        "--opt",
        `build-arg:BASE=${base}`,
        "--output",
        `type=image,name=${ref},push=true,registry.insecure=true`,
      ]);
      return { ms: r.ms, parts: { build: r.ms } };
    },
    async stop() {
      if (daemon && daemon.exitCode === null) {
        const exited = new Promise((r) => daemon.once("exit", r));
        daemon.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (daemon.exitCode === null) daemon.kill("SIGKILL");
      }
      if (daemon) await removeTree(dir).catch(() => {});
    },
  };
}

export { removeTree };
