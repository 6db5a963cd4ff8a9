/**
 * Importing the library loads only what a local build needs: the BuildKit executor's
 * gRPC client (@grpc/grpc-js) is loaded when a BuildkitExecutor first talks to a daemon,
 * the native module for xattrs, mknod and mounts (koffi) at the first such call, and
 * the native zstd encoder at the first zstd layer written.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { canOverlay } from "../../testdata/builder/fixtures.js";

const root = resolve(import.meta.dirname, "../..");
const dist = (f: string) => {
  const p = join(root, "dist", f);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` (npm test builds it through scripts/setup.sh)`);
  return p;
};
/** Whether a native module whose path contains `name` is mapped into this process (however it was loaded). */
const mapped = `(name) => require("node:fs").readFileSync("/proc/self/maps", "utf8").includes(name)`;

async function runScript(script: string, cwd = root): Promise<unknown> {
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { cwd });
  return JSON.parse(stdout);
}

describe("importing ocibuild", () => {
  it("does not load @grpc/grpc-js, though BuildkitExecutor is exported", async () => {
    const script = `
      import { createRequire } from "node:module";
      const lib = await import(${JSON.stringify(dist("index.js"))});
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => k.includes("@grpc"));
      process.stdout.write(JSON.stringify({ executor: typeof lib.BuildkitExecutor, build: typeof lib.build, loaded }));`;
    expect(await runScript(script)).toEqual({ executor: "function", build: "function", loaded: [] });
  });

  it("does not load koffi until the first native filesystem call", async () => {
    const script = `
      import { createRequire } from "node:module";
      const require = createRequire(import.meta.url);
      const isMapped = ${mapped};
      await import(${JSON.stringify(dist("index.js"))});
      const native = await import(${JSON.stringify(dist("builder/fs/native.js"))});
      const atImport = isMapped("koffi");
      const opaque = await native.areOpaque(["/"]);
      process.stdout.write(JSON.stringify({ atImport, opaque, afterCall: isMapped("koffi") }));`;
    expect(await runScript(script)).toEqual({ atImport: false, opaque: [false], afterCall: true });
  });
});

describe("the zstd encoder (native)", () => {
  const layer = `
    const { Readable, Writable } = await import("node:stream");
    const sink = () => new Writable({ write(c, e, cb) { cb(); } });
    const entries = () => [{ path: "f", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: new Date(0), size: 1, open: () => Readable.from([Buffer.from("x")]) }];`;

  it("is not loaded for gzip layers, only at the first zstd layer written", async () => {
    const script = `
      import { createRequire } from "node:module";
      const require = createRequire(import.meta.url);
      const isMapped = ${mapped};
      const { writeLayer } = await import(${JSON.stringify(dist("oci/layer.js"))});
      ${layer}
      await writeLayer(entries(), sink());
      const afterGzip = isMapped("node-zstd");
      const z = await writeLayer(entries(), sink(), { compression: "zstd" });
      process.stdout.write(JSON.stringify({ afterGzip, mediaType: z.mediaType, afterZstd: isMapped("node-zstd") }));`;
    expect(await runScript(script)).toEqual({ afterGzip: false, mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", afterZstd: true });
  });

  it("missing (a platform with no prebuilt binary): writing zstd fails with LAYER_COMPRESSION_UNAVAILABLE, reading zstd still works", async () => {
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-nozstd-"));
    try {
      await cp(join(root, "dist"), join(dir, "dist"), { recursive: true });
      await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
      await mkdir(join(dir, "node_modules"));
      for (const name of await readdir(join(root, "node_modules"))) {
        if (name !== "@toondepauw") await symlink(join(root, "node_modules", name), join(dir, "node_modules", name));
      }
      const script = `
        const { writeLayer } = await import("./dist/oci/layer.js");
        const { zstdDecompressor } = await import("./dist/oci/zstd-decompress.js");
        ${layer}
        const code = await writeLayer(entries(), sink(), { compression: "zstd" }).then(() => "ok", (e) => e.code);
        // "hello" as one zstd frame (\`printf hello | zstd -c\`), decoded by whichever decoder this Node has.
        const frame = Buffer.from("KLUv/QRYKQAAaGVsbG+jbZ+I", "base64");
        let out = "";
        const d = zstdDecompressor();
        d.on("data", (c) => (out += c));
        await new Promise((resolve, reject) => { d.on("end", resolve); d.on("error", reject); d.end(frame); });
        process.stdout.write(JSON.stringify({ code, out }));`;
      expect(await runScript(script, dir)).toEqual({ code: "LAYER_COMPRESSION_UNAVAILABLE", out: "hello" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!canOverlay())("without koffi (a platform with no prebuilt binary; needs root and overlayfs)", () => {
  it("mknod and overlay mounts fall back to the commands, and xattrs fail with ROOTFS_XATTR_UNSUPPORTED on every call", async () => {
    // dist/ and every dependency but koffi, in a directory of its own.
    const dir = await mkdtemp(join(tmpdir(), "ocibuild-nokoffi-"));
    try {
      await cp(join(root, "dist"), join(dir, "dist"), { recursive: true });
      await writeFile(join(dir, "package.json"), JSON.stringify({ type: "module" }));
      await mkdir(join(dir, "node_modules"));
      for (const name of await readdir(join(root, "node_modules"))) {
        if (name === "koffi" || name === "@koromix") continue;
        await symlink(join(root, "node_modules", name), join(dir, "node_modules", name));
      }
      await mkdir(join(dir, "lower"));
      await writeFile(join(dir, "lower", "f"), "f");
      const script = `
        const native = await import("./dist/builder/fs/native.js");
        const { mountRoot } = await import("./dist/builder/fs/overlay.js");
        const { lstatSync, readFileSync } = await import("node:fs");
        const codes = [];
        for (let i = 0; i < 2; i++) codes.push(await native.getXattrs(["/"]).then(() => "ok", (e) => e.code + ": " + e.hint));
        await native.mknod("fifo", "fifo", 0o640);
        const root = await mountRoot(["lower"].map((d) => process.cwd() + "/" + d), process.cwd() + "/s");
        const merged = readFileSync(root.merged + "/f", "utf8");
        await root.unmount();
        const mounted = readFileSync("/proc/self/mountinfo", "utf8").includes(process.cwd());
        process.stdout.write(JSON.stringify({ codes, fifo: lstatSync("fifo").isFIFO() && (lstatSync("fifo").mode & 0o777), mode: root.mode, merged, mounted }));`;
      const hint = "ROOTFS_XATTR_UNSUPPORTED: reinstall ocibuild with its dependencies (npm installs koffi's prebuilt binary for linux x64 and arm64)";
      expect(await runScript(script, dir)).toEqual({ codes: [hint, hint], fifo: 0o640, mode: "overlay", merged: "f", mounted: false });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
