/**
 * Test, demo and benchmark support: a small base image made from Debian's
 * busybox-static, built by ocibuild itself (FROM scratch + COPY of a prepared
 * rootfs per architecture) and pushed to a local registry. No public registry
 * is involved. The arm64 binary comes from Debian's busybox-static:arm64 package,
 * which scripts/setup.sh unpacks under .cache/debs.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { build, type BuildResult } from "../builder/build.js";

const pexec = promisify(execFile);

export const HOST_BUSYBOX = "/bin/busybox";

/** Where scripts/setup.sh unpacks Debian's arm64 busybox-static (relative to the checkout). */
export const ARM64_BUSYBOX = join(dirname(fileURLToPath(import.meta.url)), "../../.cache/debs/busybox-arm64/bin/busybox");

export function haveArm64Busybox(): boolean {
  return existsSync(ARM64_BUSYBOX);
}

export interface BusyboxContextOptions {
  /** Statically linked busybox binaries by OCI architecture (default: { <host arch>: /bin/busybox }). */
  busyboxes?: Record<string, string>;
}

function hostArch(): string {
  return process.arch === "x64" ? "amd64" : process.arch;
}

/** Write a build context whose Dockerfile turns a busybox rootfs (one per architecture) into an image. */
export async function makeBusyboxContext(dir: string, opts: BusyboxContextOptions = {}): Promise<void> {
  const busyboxes = opts.busyboxes ?? { [hostArch()]: HOST_BUSYBOX };
  const applets = (await pexec(HOST_BUSYBOX, ["--list"])).stdout.split("\n").filter((a) => a !== "" && a !== "busybox");
  for (const [arch, binary] of Object.entries(busyboxes)) {
    const rootfs = join(dir, `rootfs-${arch}`);
    for (const d of ["bin", "etc", "root", "home/app", "var", "usr/bin"]) await mkdir(join(rootfs, d), { recursive: true });
    await mkdir(join(rootfs, "tmp"), { recursive: true });
    await chmod(join(rootfs, "tmp"), 0o1777);
    await chmod(join(rootfs, "root"), 0o700);
    await copyFile(binary, join(rootfs, "bin/busybox"));
    await chmod(join(rootfs, "bin/busybox"), 0o755);
    for (const a of applets) await symlink("busybox", join(rootfs, "bin", a));
    await writeFile(
      join(rootfs, "etc/passwd"),
      "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    await writeFile(join(rootfs, "etc/group"), "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n");
  }
  await writeFile(join(dir, "Dockerfile"), 'FROM scratch\nARG TARGETARCH\nCOPY rootfs-${TARGETARCH}/ /\nCMD ["sh"]\n');
}

export interface BusyboxBaseOptions extends BusyboxContextOptions {
  /** Where to push, e.g. "127.0.0.1:5000/base/busybox:latest". */
  reference: string;
  /** Scratch directory for the context. */
  workDir: string;
  cacheDir: string;
  signal?: AbortSignal;
}

/** Build and push the base: one image, or an index when several architectures are given. */
export async function pushBusyboxBase(opts: BusyboxBaseOptions): Promise<BuildResult> {
  await makeBusyboxContext(opts.workDir, opts);
  const arches = Object.keys(opts.busyboxes ?? { [hostArch()]: HOST_BUSYBOX });
  return build({
    context: opts.workDir,
    tags: [opts.reference],
    cacheDir: opts.cacheDir,
    platform: arches.map((a) => `linux/${a}`).join(","),
    sourceDateEpoch: 0,
    signal: opts.signal,
  });
}
