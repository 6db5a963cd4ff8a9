/**
 * The C library's filesystem calls Node has no API for (extended attributes,
 * mknod, mount/umount), called in-process through koffi's FFI (prebuilt for each
 * platform inside its npm packages: no compiler, no interpreter). This is the only
 * module that loads koffi; native.ts imports it on the first call that
 * needs it, so a fully cached build, or a program that only imports the library,
 * never loads a native module.
 *
 * Each function returns what the system call returns, or `-errno` when it failed.
 * The xattr calls and mknod are synchronous: a few microseconds each, where one of
 * koffi's calls on a worker thread costs 20-50 µs (callers batch them in slices).
 * mount and umount2 run on koffi's worker threads: each takes milliseconds in the
 * kernel (more under load), which would stall the event loop; umount2Now is for the
 * one unmount that cannot take long (an overlay mounted `volatile`).
 */
import { dirname, join } from "node:path";
import type koffiModule from "koffi";
import { withRequire } from "../../builtins.js";

/**
 * koffi's native module. Where npm put koffi's prebuilt package for this platform
 * beside ours (`@koromix/koffi-linux-x64`, hoisted), it is required straight from its
 * file: koffi's own entry resolves three packages and probes the binary's ELF header
 * for its C library first, 9.6-13 ms against 3.7-6.3 ms (a building run's first mount
 * waits for it). The glibc build is tried; anything else (musl, another layout, a
 * module that fails to load or lacks a function) goes through koffi's entry.
 */
function loadKoffi(): { koffi: typeof koffiModule; path: string } {
  if (process.platform === "linux") {
    try {
      const loaded = withRequire((req) => {
        const pkg = req.resolve(`@koromix/koffi-linux-${process.arch}/package.json`);
        const path = join(dirname(pkg), `linux_${process.arch}`, "koffi.node");
        return { koffi: req(path) as typeof koffiModule, path };
      });
      if (typeof loaded.koffi.load === "function" && typeof loaded.koffi.errno === "function") return loaded;
    } catch {
      // koffi's entry decides.
    }
  }
  return withRequire((req) => ({ koffi: req("koffi") as typeof koffiModule, path: req.resolve("koffi") }));
}

const { koffi, path: koffiFile } = loadKoffi();

// The process's own symbols include the C library's (glibc or musl, whichever Node was linked to).
const lib = koffi.load(null);
const fn = {
  llistxattr: lib.func("intptr_t llistxattr(const char *path, void *list, size_t size)"),
  lgetxattr: lib.func("intptr_t lgetxattr(const char *path, const void *name, void *value, size_t size)"),
  lsetxattr: lib.func("int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)"),
  mount: lib.func("int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)"),
  umount2: lib.func("int umount2(const char *target, int flags)"),
  strerror: lib.func("const char *strerror(int errnum)"),
  ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)"),
};

/** FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (linux/fs.h; the kernel reads and writes an int). */
const FS_IOC_GETFLAGS = 0x80086601;
const FS_IOC_SETFLAGS = 0x40086602;

/** glibc before 2.33 has no mknod symbol (only __xmknod): then the mknod command is used instead. */
function bindMknod(): ((path: string, mode: number, dev: bigint) => number) | undefined {
  try {
    return lib.func("int mknod(const char *path, uint32_t mode, uint64_t dev)") as (path: string, mode: number, dev: bigint) => number;
  } catch {
    return undefined;
  }
}
const mknodFn = bindMknod();

/** `r` when the call succeeded (r >= 0), else -errno. */
function result(r: number): number {
  return r >= 0 ? r : -koffi.errno();
}

/** `f(...args)` on a worker thread; koffi hands the callback that thread's errno. */
function onWorker(f: ReturnType<typeof lib.func>, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    f.async(...args, (err: unknown, r: number) => (err ? reject(err) : resolve(result(r))));
  });
}

/** glibc's and musl's makedev (the 64-bit dev_t layout). */
function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}

export const libc = {
  /** The file koffi was loaded from, for worker threads to load the same (file-readers.ts). */
  koffiPath: koffiFile,
  /** NUL-separated names into `buf`; the length used. */
  llistxattr: (path: string, buf: Buffer): number => result(fn.llistxattr(path, buf, buf.length) as number),
  /** `name` is NUL-terminated bytes (as llistxattr gives them); the value's length in `buf`. */
  lgetxattr: (path: string, name: Buffer, buf: Buffer): number => result(fn.lgetxattr(path, name, buf, buf.length) as number),
  lsetxattr: (path: string, name: string, value: Buffer): number => result(fn.lsetxattr(path, name, value, value.length, 0) as number),
  /** undefined where the C library has no mknod symbol. */
  mknod:
    mknodFn === undefined ? undefined : (path: string, mode: number, major: number, minor: number): number => result(mknodFn(path, mode, makedev(major, minor))),
  mount: (source: string, target: string, fstype: string, data: string): Promise<number> => onWorker(fn.mount, source, target, fstype, 0, data),
  umount2: (target: string, flags: number): Promise<number> => onWorker(fn.umount2, target, flags),
  /** umount2 on this thread: for a mount known to unmount at once (an overlay mounted `volatile`, which syncs nothing). */
  umount2Now: (target: string, flags: number): number => result(fn.umount2(target, flags) as number),
  strerror: (errno: number): string => fn.strerror(errno) as string,
  /** The inode flags (chattr's) of the file open at `fd`. */
  getFlags: (fd: number, out: Buffer): number => result(fn.ioctl(fd, FS_IOC_GETFLAGS, "void *", out) as number),
  setFlags: (fd: number, flags: Buffer): number => result(fn.ioctl(fd, FS_IOC_SETFLAGS, "void *", flags) as number),
};

export type Libc = typeof libc;
