import { execFile } from "node:child_process";
import { lstat, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { OcibuildError } from "../../src/errors.js";
import { NativeCallError, NativeHelper } from "../../src/builder/native-helper.js";
import { areOpaque, findOpaqueDirs, getXattrs, mknod, setXattrs } from "../../src/builder/rootfs-native.js";
import { haveTool, isRoot } from "../../testdata/builder/fixtures.js";

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error("expected a rejection");
}

describe.skipIf(!haveTool("python3"))("NativeHelper: one long-lived process (needs python3)", () => {
  const helpers: NativeHelper[] = [];
  const make = (opts?: ConstructorParameters<typeof NativeHelper>[0]) => {
    const h = new NativeHelper(opts);
    helpers.push(h);
    return h;
  };
  afterEach(() => {
    for (const h of helpers.splice(0)) h.close();
  });

  it("starts on the first call and answers every later call from the same process", async () => {
    const h = make();
    expect(h.running).toBe(false);
    await h.call("ping", {});
    const pid = h.pid;
    expect(pid).toBeGreaterThan(0);
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => h.call<boolean[]>("opaque", { paths: [`/nonexistent-${i}`] })));
    expect(answers).toEqual(Array.from({ length: 50 }, () => [false]));
    expect(h.pid).toBe(pid);
  });

  it("exits by itself when idle, and the next call starts a fresh process", async () => {
    const h = make({ idleMs: 20 });
    await h.call("ping", {});
    const first = h.pid;
    await until(() => !h.running);
    await h.call("ping", {});
    expect(h.running).toBe(true);
    expect(h.pid).not.toBe(first);
  });

  it("a helper that dies is replaced on the next call", async () => {
    const h = make();
    await h.call("ping", {});
    const first = h.pid!;
    process.kill(first, "SIGKILL");
    await until(() => !h.running);
    await h.call("ping", {});
    expect(h.pid).not.toBe(first);
  });

  it("an unknown operation and a failed system call come back as NativeCallError (errno kept)", async () => {
    const h = make();
    const e1 = await rejection(h.call("no-such-op", {}));
    expect(e1).toBeInstanceOf(NativeCallError);
    const e2 = (await rejection(h.call("mknod", { path: "/nonexistent-dir/x", kind: "fifo", mode: 0o644, major: 0, minor: 0 }))) as NativeCallError;
    expect(e2).toBeInstanceOf(NativeCallError);
    expect(e2.errno).toBe("ENOENT");
    // The helper survives its callers' errors.
    await h.call("ping", {});
  });

  it("an aborted signal rejects with ROOTFS_ABORTED", async () => {
    const h = make();
    const ac = new AbortController();
    ac.abort();
    const e = await rejection(h.call("ping", {}, ac.signal));
    expect(e).toBeInstanceOf(OcibuildError);
    expect((e as OcibuildError).code).toBe("ROOTFS_ABORTED");
  });

  it("a missing interpreter fails with ROOTFS_HELPER_UNAVAILABLE and a hint", async () => {
    const h = make({ python: "/nonexistent/python3" });
    const e = (await rejection(h.call("ping", {}))) as OcibuildError;
    expect(e).toBeInstanceOf(OcibuildError);
    expect(e.code).toBe("ROOTFS_HELPER_UNAVAILABLE");
    expect(e.hint).toMatch(/python3/);
    expect(h.running).toBe(false);
  });

  it("never keeps Node alive: a script that used it exits on its own", async () => {
    // The helper and its one import, transpiled to plain JS for a separate node process.
    const ts = (await import("typescript")).default;
    const out = await mkdtemp(join(tmpdir(), "ocibuild-helper-js-"));
    try {
      for (const [from, to] of [
        ["src/errors.ts", "errors.js"],
        ["src/builder/native-helper.ts", "builder/native-helper.js"],
      ] as const) {
        const js = ts.transpileModule(await readFile(resolve(from), "utf8"), {
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        }).outputText;
        await mkdir(dirname(join(out, to)), { recursive: true });
        await writeFile(join(out, to.replace(/\.js$/, ".mjs")), js.replace(/from "(\.[^"]+)\.js"/g, 'from "$1.mjs"'));
      }
      // A one-hour idle time: only the unref'd handles can let this process end.
      const code = `import { NativeHelper } from ${JSON.stringify(join(out, "builder/native-helper.mjs"))};
const h = new NativeHelper({ idleMs: 3600000 });
await h.call("ping", {});
console.log("answered", h.running);`;
      const stdout = await new Promise<string>((res, rej) =>
        execFile(process.execPath, ["--input-type=module", "-e", code], { timeout: 30_000 }, (err, so, se) => (err ? rej(new Error(`${err.message}\n${se}`)) : res(so))),
      );
      expect(stdout.trim()).toBe("answered true");
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!haveTool("python3"))("rootfs-native through the helper (needs python3)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "ocibuild-native-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("mknod makes a fifo with exactly the mode asked (no umask)", async () => {
    await mknod(join(dir, "p"), "fifo", 0o666);
    const st = await lstat(join(dir, "p"));
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o666);
  });

  it("mknod on an existing path fails with ROOTFS_MKNOD_FAILED naming the path", async () => {
    await writeFile(join(dir, "taken"), "");
    const e = (await rejection(mknod(join(dir, "taken"), "fifo", 0o644))) as OcibuildError;
    expect(e.code).toBe("ROOTFS_MKNOD_FAILED");
    expect(e.message).toContain(join(dir, "taken"));
  });

  it.skipIf(!isRoot)("mknod makes char devices with their numbers and setuid-style bits (needs root)", async () => {
    await mknod(join(dir, "null"), "char", 0o4640, 1, 3);
    const st = await lstat(join(dir, "null"));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o4640);
    expect(st.rdev).toBe((1 << 8) | 3);
  });

  it.skipIf(!isRoot)("binary xattrs round-trip; overlay attributes are hidden from getXattrs but seen as opaque (needs root)", async () => {
    await mkdir(join(dir, "d/e"), { recursive: true });
    await writeFile(join(dir, "f"), "");
    const value = Buffer.from([0, 1, 2, 255, 10]);
    const failed = await setXattrs([
      { path: join(dir, "f"), name: "trusted.test", value },
      { path: join(dir, "d/e"), name: "trusted.overlay.opaque", value: Buffer.from("y") },
      { path: join(dir, "nonexistent"), name: "trusted.test", value },
    ]);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain("nonexistent");
    const got = await getXattrs([join(dir, "f"), join(dir, "d/e"), join(dir, "d")]);
    expect(got.get(join(dir, "f"))).toEqual({ "trusted.test": value });
    expect(got.has(join(dir, "d/e"))).toBe(false);
    expect(await areOpaque([join(dir, "d"), join(dir, "d/e"), join(dir, "f")])).toEqual([false, true, false]);
    expect([...(await findOpaqueDirs(dir))]).toEqual(["d/e"]);
  });
});
