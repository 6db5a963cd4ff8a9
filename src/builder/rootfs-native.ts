/**
 * The few filesystem calls Node has no API for: mknod (device nodes, fifos,
 * overlay whiteouts) and extended attributes. mknod goes through coreutils'
 * `mknod`; xattrs through a short python3 program (os.setxattr/os.getxattr),
 * batched so that a whole layer costs one process. Paths handed here are
 * already resolved inside the root by the caller; nothing follows a final symlink.
 */
import { spawn } from "node:child_process";
import { OcibuildError } from "../errors.js";

interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], input?: string, signal?: AbortSignal): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], signal });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
  });
}

export type NodeKind = "char" | "block" | "fifo";

/** mknod(2) through coreutils. Throws OcibuildError ROOTFS_MKNOD_FAILED with the tool's message. */
export async function mknod(hostPath: string, kind: NodeKind, mode: number, major = 0, minor = 0, signal?: AbortSignal): Promise<void> {
  const args = ["-m", (mode & 0o7777).toString(8), "--", hostPath, kind === "char" ? "c" : kind === "block" ? "b" : "p"];
  if (kind !== "fifo") args.push(String(major), String(minor));
  let r: ExecResult;
  try {
    r = await exec("mknod", args, undefined, signal);
  } catch (e) {
    throw new OcibuildError("ROOTFS_MKNOD_FAILED", `cannot run mknod for ${hostPath}: ${(e as Error).message}`, { cause: e });
  }
  if (r.code !== 0) {
    throw new OcibuildError("ROOTFS_MKNOD_FAILED", `mknod ${hostPath} failed: ${r.stderr.trim()}`, {
      details: { path: hostPath, kind, major, minor },
    });
  }
}

const PY = String.raw`
import os, sys, json, base64
cmd = sys.argv[1]
if cmd == "set":
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        op = json.loads(line)
        try:
            os.setxattr(op["p"], op["n"], base64.b64decode(op["v"]), follow_symlinks=False)
        except OSError as e:
            print(json.dumps({"p": op["p"], "n": op["n"], "e": e.strerror or str(e)}))
elif cmd == "get":
    skip = ("trusted.overlay.", "user.overlay.", "security.selinux")
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        p = json.loads(line)
        found = {}
        try:
            for n in os.listxattr(p, follow_symlinks=False):
                if n.startswith(skip):
                    continue
                found[n] = base64.b64encode(os.getxattr(p, n, follow_symlinks=False)).decode()
        except OSError:
            pass
        if found:
            print(json.dumps({"p": p, "x": found}))
elif cmd == "opaque":
    root = sys.argv[2]
    for dp, dns, fns in os.walk(root):
        for n in ("trusted.overlay.opaque", "user.overlay.opaque"):
            try:
                if os.getxattr(dp, n, follow_symlinks=False) == b"y":
                    print(json.dumps(os.path.relpath(dp, root)))
                    break
            except OSError:
                pass
`;

export interface XattrOp {
  path: string;
  name: string;
  value: Buffer;
}

function pythonMissing(e: unknown): OcibuildError {
  return new OcibuildError("ROOTFS_XATTR_UNSUPPORTED", `extended attributes need python3, which could not be run: ${(e as Error).message}`, {
    cause: e,
    hint: "install python3 (Debian: apt-get install python3-minimal)",
  });
}

/**
 * Set extended attributes (never following a final symlink). Failures of single
 * attributes are returned as messages (the caller warns); a missing helper throws.
 */
export async function setXattrs(ops: XattrOp[], signal?: AbortSignal): Promise<string[]> {
  if (ops.length === 0) return [];
  const input = ops.map((o) => JSON.stringify({ p: o.path, n: o.name, v: o.value.toString("base64") })).join("\n") + "\n";
  let r: ExecResult;
  try {
    r = await exec("python3", ["-c", PY, "set"], input, signal);
  } catch (e) {
    throw pythonMissing(e);
  }
  if (r.code !== 0) throw new OcibuildError("ROOTFS_XATTR_FAILED", `setting extended attributes failed: ${r.stderr.trim()}`);
  return r.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => {
      const f = JSON.parse(l) as { p: string; n: string; e: string };
      return `cannot set xattr ${f.n} on ${f.p}: ${f.e}`;
    });
}

/**
 * Extended attributes of `paths` (never following a final symlink), without
 * overlayfs' own and SELinux labels. Paths with none are absent from the result.
 */
export async function getXattrs(paths: string[], signal?: AbortSignal): Promise<Map<string, Record<string, Buffer>>> {
  const out = new Map<string, Record<string, Buffer>>();
  if (paths.length === 0) return out;
  let r: ExecResult;
  try {
    r = await exec("python3", ["-c", PY, "get"], paths.map((p) => JSON.stringify(p)).join("\n") + "\n", signal);
  } catch (e) {
    throw pythonMissing(e);
  }
  if (r.code !== 0) throw new OcibuildError("ROOTFS_XATTR_FAILED", `reading extended attributes failed: ${r.stderr.trim()}`);
  for (const l of r.stdout.split("\n")) {
    if (l.trim() === "") continue;
    const f = JSON.parse(l) as { p: string; x: Record<string, string> };
    const x: Record<string, Buffer> = {};
    for (const [k, v] of Object.entries(f.x)) x[k] = Buffer.from(v, "base64");
    out.set(f.p, x);
  }
  return out;
}

/** Root-relative paths ("" for the root itself) of directories marked overlay-opaque under `dir`. */
export async function findOpaqueDirs(dir: string, signal?: AbortSignal): Promise<Set<string>> {
  let r: ExecResult;
  try {
    r = await exec("python3", ["-c", PY, "opaque", dir], undefined, signal);
  } catch (e) {
    throw pythonMissing(e);
  }
  if (r.code !== 0) throw new OcibuildError("ROOTFS_XATTR_FAILED", `reading overlay attributes under ${dir} failed: ${r.stderr.trim()}`);
  const out = new Set<string>();
  for (const l of r.stdout.split("\n")) {
    if (l.trim() === "") continue;
    const rel = JSON.parse(l) as string;
    out.add(rel === "." ? "" : rel);
  }
  return out;
}

/** The overlay xattr that marks a directory opaque, for the mounter's privilege. */
export function opaqueXattrName(): string {
  return process.getuid?.() === 0 ? "trusted.overlay.opaque" : "user.overlay.opaque";
}
