// Base images for the benchmark, made here and pushed to the harness's own registry:
//  - busybox: Debian's busybox-static, built by ocibuild (src/testing/busybox.ts);
//  - debian:  `mmdebstrap --variant=minbase bookworm` from the mirror in this machine's
//    apt sources, made into a one-layer OCI image with the library's own layer writer,
//    kept as an OCI layout under .cache/bench (rebuilt only when missing) and copied
//    into the registry with the library's copy().
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { aptInstall, BenchError, run, say } from "./util.mjs";

const DEBIAN_SUITE = "bookworm";
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The apt sources of this machine (a deb822 .sources file or sources.list), used as mmdebstrap's mirror. */
async function aptSources() {
  const d = "/etc/apt/sources.list.d";
  const files = existsSync(d) ? (await readdir(d)).filter((f) => f.endsWith(".sources") || f.endsWith(".list")).map((f) => join(d, f)) : [];
  if (existsSync("/etc/apt/sources.list")) files.push("/etc/apt/sources.list");
  const debian = [];
  for (const f of files) {
    const text = await readFile(f, "utf8");
    if (/^\s*(URIs:|deb\s)/m.test(text) && /debian/.test(text)) debian.push(f);
  }
  return debian;
}

/** The minbase rootfs directory, made with mmdebstrap the first time (into a temp dir, then renamed). */
export async function debianRootfs(cacheDir, signal) {
  const dir = join(cacheDir, "debian-rootfs");
  if (existsSync(dir)) return dir;
  if (!existsSync("/usr/bin/mmdebstrap")) {
    say("installing mmdebstrap (apt-get)");
    if (!(await aptInstall("mmdebstrap", signal))) throw new BenchError("BENCH_MISSING_TOOL", "mmdebstrap is missing: run as root, or apt-get install mmdebstrap");
  }
  const sources = await aptSources();
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  say(`mmdebstrap --variant=minbase ${DEBIAN_SUITE} (mirror from ${sources.join(", ") || "mmdebstrap's default"}; about a minute, once)`);
  try {
    await run("mmdebstrap", ["--quiet", "--variant=minbase", "--mode=root", DEBIAN_SUITE, tmp, ...sources], { signal });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

/** An OCI layout holding the Debian base as `DEBIAN_SUITE`, written once (temp dir + rename). */
export async function debianLayout(dist, cacheDir, signal) {
  const dir = join(cacheDir, "debian-layout");
  if (existsSync(join(dir, "index.json"))) return { dir, ref: DEBIAN_SUITE };
  const rootfs = await debianRootfs(cacheDir, signal);
  const { OciLayout } = await import(join(dist, "oci/layout.js"));
  const { walkDirectory } = await import(join(dist, "oci/tar-entries.js"));
  const { encodeJson, descriptorOf, MediaType } = await import(join(dist, "index.js"));
  const tmp = await mkdtemp(join(cacheDir, "debian-layout.tmp-"));
  try {
    const layout = await OciLayout.create(tmp, signal);
    // /dev, /proc, /sys stay as empty directories, as in Docker's debian images.
    const filter = (rel) => !/^(dev|proc|sys)\/./.test(rel);
    say("writing the Debian base layer (tar+gzip+sha256)");
    const layer = await layout.writeLayer(walkDirectory(rootfs, { filter, signal }), { signal });
    const arch = process.arch === "arm64" ? "arm64" : "amd64";
    const config = encodeJson(MediaType.OCI_CONFIG, {
      created: "2025-05-20T00:00:00Z",
      architecture: arch,
      os: "linux",
      config: { Env: [PATH_ENV], Cmd: ["bash"] },
      rootfs: { type: "layers", diff_ids: [layer.diffId] },
      history: [{ created: "2025-05-20T00:00:00Z", created_by: `mmdebstrap --variant=minbase ${DEBIAN_SUITE}` }],
    });
    await layout.writeBlob(config.bytes, { digest: config.digest }, signal);
    const manifest = encodeJson(MediaType.OCI_MANIFEST, {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      config: descriptorOf(config),
      layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
    });
    await layout.writeBlob(manifest.bytes, { digest: manifest.digest }, signal);
    await layout.addManifest(descriptorOf(manifest), DEBIAN_SUITE, signal);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { dir, ref: DEBIAN_SUITE };
}

/** Pushes both bases to `reg`; returns their references. */
export async function pushBases(dist, reg, cacheDir, signal) {
  const { copy } = await import(join(dist, "index.js"));
  const { pushBusyboxBase } = await import(join(dist, "testing/busybox.js"));
  const busybox = `${reg.host}/base/busybox:latest`;
  const work = await mkdtemp(join(cacheDir, "busybox-ctx-"));
  try {
    await mkdir(join(cacheDir, "base-build-cache"), { recursive: true });
    await pushBusyboxBase({ reference: busybox, workDir: work, cacheDir: join(cacheDir, "base-build-cache"), signal });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const layout = await debianLayout(dist, cacheDir, signal);
  const debian = `${reg.host}/base/debian:${DEBIAN_SUITE}`;
  await copy(`oci:${layout.dir}:${layout.ref}`, debian, { signal });
  await writeFile(join(cacheDir, "last-bases.txt"), `${busybox}\n${debian}\n`);
  return { busybox, debian };
}
