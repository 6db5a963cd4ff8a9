/**
 * Test, demo and benchmark support: a small base image made from Debian's
 * busybox-static, built by ocibuild itself (FROM scratch + COPY of a prepared
 * rootfs) and pushed to a local registry. No public registry is involved.
 */
import { execFile } from "node:child_process";
import { chmod, copyFile, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { build, type BuildResult } from "../builder/build.js";

const pexec = promisify(execFile);

export const HOST_BUSYBOX = "/bin/busybox";

export interface BusyboxContextOptions {
  /** A statically linked busybox binary (default: the host's /bin/busybox). */
  busybox?: string;
  /** Applet names to link; default: what `busybox --list` prints (host binary only). */
  applets?: string[];
}

/** Write a build context whose Dockerfile turns a busybox rootfs into an image. */
export async function makeBusyboxContext(dir: string, opts: BusyboxContextOptions = {}): Promise<void> {
  const rootfs = join(dir, "rootfs");
  for (const d of ["bin", "etc", "root", "home/app", "var", "usr/bin"]) await mkdir(join(rootfs, d), { recursive: true });
  await mkdir(join(rootfs, "tmp"), { recursive: true });
  await chmod(join(rootfs, "tmp"), 0o1777);
  await chmod(join(rootfs, "root"), 0o700);
  await copyFile(opts.busybox ?? HOST_BUSYBOX, join(rootfs, "bin/busybox"));
  await chmod(join(rootfs, "bin/busybox"), 0o755);
  const applets = opts.applets ?? (await pexec(HOST_BUSYBOX, ["--list"])).stdout.split("\n").filter((a) => a !== "" && a !== "busybox");
  for (const a of applets) await symlink("busybox", join(rootfs, "bin", a));
  await writeFile(
    join(rootfs, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  await writeFile(join(rootfs, "etc/group"), "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n");
  await writeFile(join(dir, "Dockerfile"), 'FROM scratch\nCOPY rootfs/ /\nCMD ["sh"]\n');
}

export interface BusyboxBaseOptions extends BusyboxContextOptions {
  /** Where to push, e.g. "127.0.0.1:5000/base/busybox:latest". */
  reference: string;
  /** Scratch directory for the context. */
  workDir: string;
  cacheDir: string;
  /** "linux/amd64" (default: host) or "linux/arm64" with an arm64 busybox binary. */
  platform?: string;
  signal?: AbortSignal;
}

export async function pushBusyboxBase(opts: BusyboxBaseOptions): Promise<BuildResult> {
  await makeBusyboxContext(opts.workDir, opts);
  return build({
    context: opts.workDir,
    tags: [opts.reference],
    cacheDir: opts.cacheDir,
    platform: opts.platform,
    sourceDateEpoch: 0,
    signal: opts.signal,
  });
}
