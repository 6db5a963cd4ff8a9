/**
 * Test fixtures for the builder's rootfs, snapshot and sandbox suites: tiny
 * busybox root filesystems and hand-made (possibly hostile) layer tars.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import tar from "tar-stream";
import type { DiffID } from "../../src/oci/digest.js";

export const BUSYBOX = "/bin/busybox";
export const APPLETS = ["sh", "id", "echo", "ls", "cat", "ip", "touch", "rm", "mkdir", "chmod", "chown", "stat", "hostname", "sleep", "pwd", "env", "printf", "test", "true", "false", "mv", "ln", "wc"];

export const isRoot = process.getuid?.() === 0;

/** busybox-static must be a static binary: it is copied into roots without its libraries. */
export function haveBusyboxStatic(): boolean {
  return existsSync(BUSYBOX);
}

export function haveTool(name: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Whether overlayfs can be mounted here (root and the module present). */
export function canOverlay(): boolean {
  if (!isRoot) return false;
  try {
    return execFileSync("cat", ["/proc/filesystems"], { encoding: "utf8" }).includes("overlay");
  } catch {
    return false;
  }
}

/** A minimal root: /bin/busybox with applet symlinks, /etc/passwd and /etc/group. */
export async function makeBusyboxRoot(dir: string, opts: { passwd?: string; group?: string } = {}): Promise<void> {
  await mkdir(join(dir, "bin"), { recursive: true });
  await mkdir(join(dir, "etc"), { recursive: true });
  await mkdir(join(dir, "tmp"), { recursive: true });
  await chmod(join(dir, "tmp"), 0o1777);
  await copyFile(BUSYBOX, join(dir, "bin", "busybox"));
  for (const a of APPLETS) await symlink("busybox", join(dir, "bin", a));
  await writeFile(
    join(dir, "etc", "passwd"),
    opts.passwd ?? "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
  );
  await writeFile(join(dir, "etc", "group"), opts.group ?? "root:x:0:\nwheel:x:10:app\napp:x:1000:\nstaff:x:50:app,other\nnogroup:x:65534:\n");
}

export interface TarSpec {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "character-device" | "block-device" | "fifo";
  content?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  mtime?: Date;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

/** Build a tar (optionally gzipped) from specs, names written exactly as given. */
export async function makeTar(specs: TarSpec[], gzip = false): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on("data", (c: unknown) => chunks.push(c as Buffer));
    pack.on("end", () => resolve());
    pack.on("error", reject);
  });
  for (const s of specs) {
    const type = s.type ?? "file";
    const header = {
      name: s.name,
      type,
      mode: s.mode ?? (type === "directory" ? 0o755 : 0o644),
      uid: s.uid ?? 0,
      gid: s.gid ?? 0,
      mtime: s.mtime ?? new Date("2024-01-02T03:04:05Z"),
      linkname: s.linkname,
      devmajor: s.devmajor,
      devminor: s.devminor,
      pax: s.pax,
    };
    await new Promise<void>((resolve, reject) => {
      if (type === "file") pack.entry(header, s.content ?? "", (e) => (e ? reject(e) : resolve()));
      else pack.entry(header, (e) => (e ? reject(e) : resolve())).end(Buffer.alloc(0));
    });
  }
  pack.finalize();
  await done;
  const raw = Buffer.concat(chunks);
  return gzip ? gzipSync(raw) : raw;
}

export function streamOf(buf: Buffer): Readable {
  // Several chunks, to exercise the magic-byte sniffing across chunk boundaries.
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += 3000) parts.push(buf.subarray(i, i + 3000));
  if (parts.length > 0 && parts[0]!.length > 2) parts.splice(0, 1, parts[0]!.subarray(0, 1), parts[0]!.subarray(1));
  return Readable.from(parts);
}

/** A gzipped layer and its real DiffID (sha256 of the uncompressed tar). */
export async function makeLayer(specs: TarSpec[]): Promise<{ gz: Buffer; diffId: DiffID }> {
  const raw = await makeTar(specs, false);
  return { gz: gzipSync(raw), diffId: `sha256:${createHash("sha256").update(raw).digest("hex")}` as DiffID };
}


/**
 * An empty extraction root and, beside it, a directory holding a canary file that no
 * layer may reach: BASE/root and BASE/outside/canary ("safe"). Remove `base` after.
 */
export async function makeCanaryRoot(prefix: string): Promise<{ base: string; root: string; outside: string }> {
  const base = await mkdtemp(join(tmpdir(), prefix));
  const root = join(base, "root");
  const outside = join(base, "outside");
  await mkdir(root);
  await mkdir(outside);
  await writeFile(join(outside, "canary"), "safe");
  return { base, root, outside };
}
