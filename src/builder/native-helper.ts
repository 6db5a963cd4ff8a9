/**
 * One long-lived helper process for the filesystem calls Node has no API for
 * (extended attributes, mknod, mount/umount). Spawning a program per call cost
 * 10-200 ms each (python3 start-up dominates under load) and a step made several;
 * the helper is started once, on first use, and answers requests over JSON lines:
 *
 *   -> {"i": 7, "op": "get", "paths": [...]}
 *   <- {"i": 7, "r": ...}   or   {"i": 7, "e": "message", "errno": "EPERM"}
 *
 * Requests are answered in order by a single-threaded python3 program (stdlib
 * only, started with -S -E so no site packages or environment change it). The
 * process is unref'd whenever nothing is pending, so it never keeps Node alive,
 * and it exits on its own after an idle time or when closeNativeHelper() is
 * called (end of a build). A helper that dies fails the pending requests with a
 * coded error; the next request starts a fresh one.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { accessSync, constants as fsc } from "node:fs";
import type { Socket } from "node:net";
import { OcibuildError } from "../errors.js";

const PY = String.raw`
import os, sys, json, base64, stat
SKIP = ("trusted.overlay.", "user.overlay.", "security.selinux")
OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
libc = None
def getlibc():
    global libc
    if libc is None:
        import ctypes
        # The interpreter's own symbols include libc's (no find_library: it runs ldconfig).
        libc = ctypes.CDLL(None, use_errno=True)
    return libc
def oserr(e):
    import errno as E
    return {"e": e.strerror or str(e), "errno": E.errorcode.get(e.errno, "")}
def cerr(fn):
    import ctypes, errno as E
    n = ctypes.get_errno()
    return {"e": fn + ": " + os.strerror(n), "errno": E.errorcode.get(n, "")}
def is_opaque(p):
    for n in OPAQUE:
        try:
            if os.getxattr(p, n, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False
def handle(q):
    op = q["op"]
    if op == "get":
        out = {}
        for p in q["paths"]:
            found = {}
            try:
                for n in os.listxattr(p, follow_symlinks=False):
                    if n.startswith(SKIP):
                        continue
                    found[n] = base64.b64encode(os.getxattr(p, n, follow_symlinks=False)).decode()
            except OSError:
                pass
            if found:
                out[p] = found
        return {"r": out}
    if op == "set":
        failed = []
        for o in q["ops"]:
            try:
                os.setxattr(o["p"], o["n"], base64.b64decode(o["v"]), follow_symlinks=False)
            except OSError as e:
                failed.append({"p": o["p"], "n": o["n"], "e": e.strerror or str(e)})
        return {"r": failed}
    if op == "opaque":
        return {"r": [is_opaque(p) for p in q["paths"]]}
    if op == "opaque-walk":
        root = q["root"]
        found = []
        for dp, dns, fns in os.walk(root):
            if is_opaque(dp):
                found.append(os.path.relpath(dp, root))
        return {"r": found}
    if op == "mknod":
        kind = {"char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}[q["kind"]]
        try:
            os.mknod(q["path"], kind | (q["mode"] & 0o777), os.makedev(q["major"], q["minor"]))
            os.chmod(q["path"], q["mode"] & 0o7777)
        except OSError as e:
            return oserr(e)
        return {"r": True}
    if op == "mount":
        c = getlibc()
        prev = os.getcwd()
        os.chdir(q["cwd"])
        try:
            if c.mount(q["source"].encode(), q["target"].encode(), q["fstype"].encode(), 0, q["data"].encode()) != 0:
                return cerr("mount")
        finally:
            os.chdir(prev)
        return {"r": True}
    if op == "umount":
        c = getlibc()
        if c.umount2(q["target"].encode(), q.get("flags", 0)) != 0:
            return cerr("umount")
        return {"r": True}
    if op == "ping":
        return {"r": True}
    return {"e": "unknown op " + op}
os.chdir("/")
for line in sys.stdin:
    if not line.strip():
        continue
    q = json.loads(line)
    try:
        a = handle(q)
    except Exception as e:
        a = {"e": type(e).__name__ + ": " + str(e)}
    a["i"] = q["i"]
    sys.stdout.write(json.dumps(a) + "\n")
    sys.stdout.flush()
`;

/** What the helper answered with when a call failed. */
export class NativeCallError extends Error {
  constructor(
    message: string,
    /** errno name ("EPERM"), or "" when not a system call failure. */
    readonly errno: string,
  ) {
    super(message);
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
}

export interface NativeHelperOptions {
  /**
   * Exit after this long without requests (default 30 s: longer than most RUN
   * steps, so a build keeps one helper; an idle one costs a few MB and never keeps
   * Node alive).
   */
  idleMs?: number;
  /** The python interpreter (default: /usr/bin/python3 when present, else python3 from PATH). */
  python?: string;
}

export class NativeHelper {
  private child: ChildProcessWithoutNullStreams | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buf = "";
  private stderr = "";
  private idleTimer: NodeJS.Timeout | null = null;
  private closeWhenIdle = false;
  private readonly idleMs: number;
  private readonly python: string;

  constructor(opts: NativeHelperOptions = {}) {
    this.idleMs = opts.idleMs ?? 30_000;
    this.python = opts.python ?? defaultPython();
  }

  /** Whether a helper process is running now (for tests and diagnostics). */
  get running(): boolean {
    return this.child !== null;
  }

  /** Calls sent and not answered yet. */
  get pendingCalls(): number {
    return this.pending.size;
  }

  /** The running helper's pid, if any. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): ChildProcessWithoutNullStreams {
    const child = spawn(this.python, ["-S", "-E", "-c", PY], { stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    this.buf = "";
    this.stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => this.onData(d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    child.stdin.on("error", () => {});
    const gone = (e: OcibuildError) => {
      if (this.child !== child) return;
      this.child = null;
      this.closeWhenIdle = false;
      this.clearIdle();
      const all = [...this.pending.values()];
      this.pending.clear();
      for (const p of all) {
        p.cleanup();
        p.reject(e);
      }
    };
    child.on("error", (e) =>
      gone(
        new OcibuildError("ROOTFS_HELPER_UNAVAILABLE", `the filesystem helper (${this.python}) could not be run: ${e.message}`, {
          cause: e,
          hint: "install python3 (Debian: apt-get install python3)",
        }),
      ),
    );
    child.on("close", (code, sig) =>
      gone(
        new OcibuildError("ROOTFS_HELPER_EXITED", `the filesystem helper exited (${sig ?? `code ${code}`})${this.stderr.trim() ? `: ${this.stderr.trim()}` : ""}`, {
          retryable: true,
        }),
      ),
    );
    return child;
  }

  private onData(d: string): void {
    // Only a chunk with a newline can complete an answer (answers can be long: scan the new part only).
    const complete = d.includes("\n");
    this.buf += d;
    if (!complete) return;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.trim() === "") continue;
      let msg: { i: number; r?: unknown; e?: string; errno?: string };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        // Not our protocol: the helper is broken; its exit fails what is pending and the next call restarts it.
        this.stderr = `${this.stderr}\nunreadable answer: ${line.slice(0, 200)}`.slice(-4000);
        this.child?.kill("SIGKILL");
        continue;
      }
      const p = this.pending.get(msg.i);
      if (p === undefined) continue; // an aborted request
      this.pending.delete(msg.i);
      p.cleanup();
      if (msg.e !== undefined) p.reject(new NativeCallError(msg.e, msg.errno ?? ""));
      else p.resolve(msg.r);
    }
    this.settle();
  }

  /** Keep Node alive only while requests are outstanding; arm the idle exit otherwise. */
  private settle(): void {
    const child = this.child;
    if (child === null) return;
    if (this.pending.size > 0) {
      this.clearIdle();
      child.ref();
      (child.stdout as unknown as Socket).ref();
      return;
    }
    if (this.closeWhenIdle) {
      this.close();
      return;
    }
    child.unref();
    for (const s of [child.stdout, child.stderr, child.stdin]) (s as unknown as Socket).unref();
    if (this.idleTimer === null) {
      this.idleTimer = setTimeout(() => this.close(), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private clearIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /** Send one request; resolves with the helper's result or rejects with NativeCallError/OcibuildError. */
  call<T>(op: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) return Promise.reject(aborted(signal));
    const child = this.child ?? this.start();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (!this.pending.delete(id)) return;
        reject(aborted(signal!));
        this.settle();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        resolve: resolve as (v: unknown) => void,
        reject,
        cleanup: () => signal?.removeEventListener("abort", onAbort),
      });
      this.settle();
      child.stdin.write(JSON.stringify({ ...args, op, i: id }) + "\n");
    });
  }

  /** Start the helper now (at the beginning of a build) so the first real call does not wait for it. Never throws. */
  warm(): void {
    this.call("ping", {}).catch(() => {});
  }

  /**
   * Stop the helper once it has answered what is pending. Safe at any time; a
   * later call starts a new one. The process is detached at once when idle, so a
   * call racing with the idle exit goes to a fresh helper, never to one that is
   * shutting down.
   */
  close(): void {
    this.clearIdle();
    const child = this.child;
    if (child === null) return;
    if (this.pending.size > 0) {
      this.closeWhenIdle = true;
      return;
    }
    this.closeWhenIdle = false;
    this.child = null;
    child.stdin.end();
    // Nothing more is wanted from it: neither the process nor its pipes keep this one
    // alive (waiting for python's own exit cost every CLI build ~50 ms). It reads EOF
    // on stdin and exits, also when we exit first.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr] as unknown as { unref?: () => void }[]) s.unref?.();
  }
}

/**
 * The system interpreter when there is one: it is what the distribution's
 * python3 package installs, and it skips PATH shims (pyenv, virtualenv wrappers)
 * that cost a chain of shell processes at start-up. The helper needs only the
 * standard library, so any python3 works.
 */
function defaultPython(): string {
  try {
    accessSync("/usr/bin/python3", fsc.X_OK);
    return "/usr/bin/python3";
  } catch {
    return "python3";
  }
}

function aborted(signal: AbortSignal): OcibuildError {
  return new OcibuildError("ROOTFS_ABORTED", "the filesystem call was aborted", { cause: signal.reason });
}

/**
 * The helper shared by the builder's filesystem code. It is a lazily started,
 * self-closing resource (like a connection pool), not state: every call is
 * independent, and closeNativeHelper() at the end of a build releases it early.
 */
const shared = new NativeHelper();

export function nativeHelper(): NativeHelper {
  return shared;
}

/** Stop the shared helper (call when a build ends; it also stops by itself when idle). */
export function closeNativeHelper(): void {
  shared.close();
}

/** Start the shared helper in the background (call when a build starts). */
export function warmNativeHelper(): void {
  shared.warm();
}
