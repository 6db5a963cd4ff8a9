// Base images for the benchmark, made here and pushed to the harness's own registry:
//  - busybox: Debian's busybox-static, built by ocibuild (src/testing/busybox.ts);
//  - debian:  `mmdebstrap --variant=minbase bookworm` made into a one-layer OCI image
//    (src/testing/debian.ts), kept as an OCI layout under .cache/bench (rebuilt only
//    when missing) and copied into the registry with the library's copy().
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { aptInstall, BenchError, say } from "./util.mjs";

/** The Debian base as an OCI layout (src/testing/debian.ts; mmdebstrap installed first if need be). */
async function debianLayout(dist, cacheDir, signal) {
  if (!existsSync("/usr/bin/mmdebstrap")) {
    say("installing mmdebstrap (apt-get)");
    if (!(await aptInstall("mmdebstrap", signal))) throw new BenchError("BENCH_MISSING_TOOL", "mmdebstrap is missing: run as root, or apt-get install mmdebstrap");
  }
  const { debianLayout: make, debianRootfs } = await import(join(dist, "testing/debian.js"));
  if (!existsSync(join(cacheDir, "debian-rootfs"))) say("mmdebstrap --variant=minbase bookworm from this machine's apt mirror (about a minute, once)");
  await debianRootfs(cacheDir, signal);
  return make(cacheDir, signal);
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
  const debian = `${reg.host}/base/debian:${layout.ref}`;
  await copy(`oci:${layout.dir}:${layout.ref}`, debian, { signal });
  await writeFile(join(cacheDir, "last-bases.txt"), `${busybox}\n${debian}\n`);
  return { busybox, debian };
}
