/**
 * The CLI on a machine with no python3 (node:20-slim has none): the bundled CLI
 * runs in a private mount namespace where every /usr/bin/python3* is masked, with
 * a PATH of links to every other command. It pulls a base whose layer holds a
 * device node and a file with a setcap-like user.* xattr, runs RUN steps on
 * overlay roots, and the layers keep the device, the xattr and an opaque
 * directory. A second, fully cached build does not load the native module.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { createWriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { build } from "../../src/builder/build.js";
import { writeLayer, type LayerEntry } from "../../src/oci/layer.js";
import { pushBusyboxBase } from "../../src/testing/busybox.js";
import { canOverlay } from "../../testdata/builder/fixtures.js";
import { haveRegistry, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { have, isRoot } from "../helpers/tools.js";

const root = resolve(import.meta.dirname, "../..");
const ready = isRoot && canOverlay() && haveRegistry() && have("bwrap") && have("unshare");
const CAP = Buffer.from("0100000200200000000000000000000000000000", "hex");

/** Masks python3 in a new mount namespace, checks it cannot run, then runs the command. */
const WRAPPER = `
for f in /usr/bin/python3* /usr/local/bin/python3*; do [ -e "$f" ] && mount --bind /dev/null "$f"; done
if /usr/bin/python3 -c "" 2>/dev/null; then echo "python3 still runs" >&2; exit 98; fi
if PATH="$NOPY_PATH" command -v python3 >/dev/null; then echo "python3 still on PATH" >&2; exit 99; fi
export PATH="$NOPY_PATH"
exec "$@"`;

/** At exit, records whether koffi's native module was ever mapped into the process. */
const PROBE = `process.on("exit", () => require("node:fs").writeFileSync(process.env.PROBE_OUT,
  String(require("node:fs").readFileSync("/proc/self/maps", "utf8").includes("koffi"))));`;

async function tarEntries(gz: Buffer): Promise<Map<string, tar.Header>> {
  const out = new Map<string, tar.Header>();
  const ex = tar.extract();
  const done = new Promise<void>((res, rej) => ex.on("finish", res).on("error", rej));
  ex.on("entry", (h, stream, next) => {
    out.set(h.name, h);
    stream.on("end", next).resume();
  });
  Readable.from([gunzipSync(gz)]).pipe(ex);
  await done;
  return out;
}

describe.skipIf(!ready)("the CLI with no python3 anywhere (needs root, overlayfs, bwrap, unshare, docker-registry)", () => {
  let reg: TestRegistry;
  let work: string;
  let base: string;
  let binDir: string;

  beforeAll(async () => {
    if (!existsSync(join(root, "dist/ocibuild.cjs"))) throw new Error("dist/ocibuild.cjs is missing: run `npm run build`");
    reg = await startRegistry();
    work = await mkdtemp(join(tmpdir(), "ocibuild-e2e-nopy-"));
    const busybox = `${reg.host}/base/busybox:latest`;
    await pushBusyboxBase({ reference: busybox, workDir: join(work, "bb"), cacheDir: join(work, "cache0") });
    // A base layer with a device node, a capability-like xattr and a directory a RUN replaces.
    const ctx = join(work, "base");
    await mkdir(ctx);
    const t0 = new Date(0);
    const entries: LayerEntry[] = [
      { path: "opt", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: t0 },
      { path: "opt/dir", type: "directory", mode: 0o755, uid: 0, gid: 0, mtime: t0 },
      { path: "opt/dir/old", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: t0, size: 3, open: () => Readable.from([Buffer.from("old")]) },
      { path: "opt/null", type: "char", mode: 0o666, uid: 0, gid: 0, mtime: t0, devmajor: 1, devminor: 3 },
      { path: "opt/ping", type: "file", mode: 0o755, uid: 0, gid: 0, mtime: t0, size: 4, xattrs: { "user.cap": CAP }, open: () => Readable.from([Buffer.from("ping")]) },
    ];
    await writeLayer(entries, createWriteStream(join(ctx, "extra.tar.gz")));
    await writeFile(join(ctx, "Dockerfile"), `FROM ${busybox}\nADD extra.tar.gz /\n`);
    base = `${reg.host}/base/devices:latest`;
    await build({ context: ctx, tags: [base], cacheDir: join(work, "cache0") });
    // Every command this shell finds, but python*.
    binDir = join(work, "bin");
    await mkdir(binDir);
    for (const d of (process.env.PATH ?? "").split(delimiter)) {
      for (const name of await readdir(d).catch(() => [] as string[])) {
        if (name.startsWith("python")) continue;
        await symlink(join(d, name), join(binDir, name)).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== "EEXIST") throw e;
        });
      }
    }
    await writeFile(join(work, "probe.cjs"), PROBE);
  }, 180_000);
  afterAll(async () => {
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function cliWithoutPython(args: string[], probeOut: string) {
    const argv = ["--mount", "--propagation", "private", "--", "sh", "-c", WRAPPER, "sh", process.execPath, "-r", join(work, "probe.cjs"), join(root, "bin/ocibuild.cjs"), ...args];
    const env = { HOME: process.env.HOME, NOPY_PATH: binDir, PROBE_OUT: probeOut, NO_COLOR: "1" };
    try {
      const r = await promisify(execFile)("unshare", argv, { env, maxBuffer: 16 << 20 });
      return { code: 0, out: r.stdout + r.stderr, koffi: await readFile(probeOut, "utf8") };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, out: x.stdout + x.stderr, koffi: "" };
    }
  }

  it("builds on overlay roots, keeping the base's device node and xattr and a RUN's opaque directory; a cached rebuild never loads koffi", async () => {
    const ctx = join(work, "app");
    await mkdir(ctx);
    await writeFile(
      join(ctx, "Dockerfile"),
      `FROM ${base}\nRUN test -c /opt/null && chmod 600 /opt/null && chmod 4755 /opt/ping\nRUN rm -rf /opt/dir && mkdir /opt/dir && echo new > /opt/dir/new\n`,
    );
    const args = ["--no-push", "--progress", "plain", "--cache-dir", join(work, "cache"), "-o", `oci:${join(work, "layout")}:v1`, ctx];
    const first = await cliWithoutPython(args, join(work, "probe1"));
    expect(first.out).not.toMatch(/error\[|python3 still/);
    expect(first.code).toBe(0);
    expect(first.out).toContain("root filesystems: overlayfs snapshots");
    expect(first.koffi).toBe("true");

    const layout = join(work, "layout");
    const blob = (d: string) => readFile(join(layout, "blobs", ...d.split(":")));
    const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8"));
    const manifest = JSON.parse((await blob(index.manifests[0].digest)).toString());
    const layers = manifest.layers as { digest: string }[];
    const chmodLayer = await tarEntries(await blob(layers.at(-2)!.digest));
    expect(chmodLayer.get("opt/null")).toMatchObject({ type: "character-device", devmajor: 1, devminor: 3, mode: 0o600 });
    const ping = chmodLayer.get("opt/ping")!;
    expect(ping.mode).toBe(0o4755);
    expect(Buffer.from((ping.pax as Record<string, string> | undefined)?.["SCHILY.xattr.user.cap"] ?? "", "latin1")).toEqual(CAP);
    const dirLayer = await tarEntries(await blob(layers.at(-1)!.digest));
    expect([...dirLayer.keys()].filter((n) => n.startsWith("opt/dir/")).sort()).toEqual(["opt/dir/", "opt/dir/.wh..wh..opq", "opt/dir/new"]);

    const again = await cliWithoutPython(args, join(work, "probe2"));
    expect(again.code).toBe(0);
    expect(again.out).not.toContain("RUN]");
    expect(again.koffi).toBe("false");
  });
});
