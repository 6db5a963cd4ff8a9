import { createHash } from "node:crypto";
import { chmod, link, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { LayerEntry } from "../../../src/oci/layer.js";
import { writeLayer } from "../../../src/oci/layer.js";
import { extractLayer } from "../../../src/builder/fs/extract.js";
import { LayerStore } from "../../../src/builder/fs/layer-store.js";
import { materialize, mountRoot, type MountedRoot } from "../../../src/builder/fs/overlay.js";
import { snapshotChanges } from "../../../src/builder/fs/snapshot.js";
import { getXattrs, setXattrs } from "../../../src/builder/fs/native.js";
import { canOverlay, haveTool, isRoot, makeLayer, streamOf, type TarSpec } from "../../../testdata/builder/fixtures.js";

const old = new Date("2020-01-01T00:00:00Z");

/** Two base layers (the second deletes something of the first), through the real LayerStore. */
const LAYER1: TarSpec[] = [
  { name: "keep/", type: "directory" },
  { name: "keep/a", content: "keep", mtime: old },
  { name: "mod/", type: "directory" },
  { name: "mod/f", content: "before", mtime: old },
  { name: "chm/", type: "directory" },
  { name: "chm/f", content: "mode", mode: 0o644, mtime: old },
  { name: "del/", type: "directory" },
  { name: "del/f", content: "delete me", mtime: old },
  { name: "del/g", content: "stays", mtime: old },
  { name: "tree/", type: "directory" },
  { name: "tree/x", content: "x", mtime: old },
  { name: "tree/sub/", type: "directory" },
  { name: "tree/sub/z", content: "z", mtime: old },
  { name: "touched/", type: "directory" },
  { name: "touched/f", content: "touch only", mtime: old },
  { name: "same/", type: "directory" },
  { name: "same/f", content: "same bytes", mtime: old, pax: { "SCHILY.xattr.user.origin": "layer1" } },
  { name: "gone/", type: "directory" },
  { name: "gone/f", content: "removed by layer 2", mtime: old },
  { name: "link", type: "symlink", linkname: "keep/a" },
  { name: "etc/", type: "directory" },
];
const LAYER2: TarSpec[] = [{ name: "gone/", type: "directory" }, { name: "gone/.wh.f" }, { name: "keep/b", content: "layer 2", mtime: old }];

async function collect(it: AsyncIterable<LayerEntry>): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for await (const e of it) out.push(e);
  return out;
}

function summary(entries: LayerEntry[]): string[] {
  return entries.map((e) => `${e.path} ${e.type} ${e.mode.toString(8)}${e.linkname ? ` -> ${e.linkname}` : ""}`);
}

async function content(e: LayerEntry): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await e.open!()) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

/** The same edits a RUN would make, done directly on the merged tree. */
async function edit(m: string): Promise<void> {
  await mkdir(join(m, "add"));
  await writeFile(join(m, "add/new.txt"), "new");
  await link(join(m, "add/new.txt"), join(m, "add/hard"));
  await writeFile(join(m, "mod/f"), "after!");
  await chmod(join(m, "chm/f"), 0o600);
  await rm(join(m, "del/f"));
  await rm(join(m, "tree"), { recursive: true });
  await mkdir(join(m, "tree"));
  await writeFile(join(m, "tree/new"), "recreated");
  await utimes(join(m, "touched/f"), new Date(), new Date());
  await writeFile(join(m, "same/f"), "same bytes");
  await writeFile(join(m, "gone/f"), "back again");
  await rm(join(m, "link"));
  await symlink("keep/b", join(m, "link"));
  // What bwrap leaves as mount points: excluded by the caller.
  await mkdir(join(m, "proc"));
  await writeFile(join(m, "etc/resolv.conf"), "");
}

const EXPECTED = [
  "add directory 755",
  "add/hard file 644",
  "add/new.txt hardlink 644 -> add/hard",
  "chm directory 755",
  "chm/f file 600",
  "del directory 755",
  "del/.wh.f file 0",
  "gone directory 755",
  "gone/f file 644",
  "link symlink 777 -> keep/b",
  "mod directory 755",
  "mod/f file 644",
  "tree directory 755",
  "tree/.wh..wh..opq file 0",
  "tree/new file 644",
];

describe.skipIf(!isRoot)("snapshotChanges (needs root for whiteout devices and trusted.* xattrs)", () => {
  let base: string;
  let lowers: string[];
  const mounted: MountedRoot[] = [];

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-snap-"));
    const store = new LayerStore(join(base, "store"));
    const l1 = await makeLayer(LAYER1);
    const l2 = await makeLayer(LAYER2);
    lowers = [
      await store.ensureLayer(l1.diffId, async () => streamOf(l1.gz)),
      await store.ensureLayer(l2.diffId, async () => streamOf(l2.gz)),
    ];
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await m.unmount();
    await rm(base, { recursive: true, force: true });
  });

  const modes = [
    { mode: "overlay" as const, forceCopy: false, forceFuse: false, skip: !canOverlay() },
    { mode: "fuse-overlayfs" as const, forceCopy: false, forceFuse: true, skip: !haveTool("fuse-overlayfs") },
    { mode: "copy" as const, forceCopy: true, forceFuse: false, skip: false },
  ];

  for (const m of modes) {
    describe.skipIf(m.skip)(`${m.mode} mode`, () => {
      it("shows the lower layers merged (layer 2's whiteout applied)", async () => {
        const logs: string[] = [];
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse, onLog: (l) => logs.push(l) });
        mounted.push(root);
        expect(root.mode).toBe(m.mode);
        expect(logs.join("\n")).toMatch(m.mode === "overlay" ? /root: overlayfs/ : m.mode === "fuse-overlayfs" ? /root: fuse-overlayfs/ : /copy mode/);
        expect((await readdir(join(root.merged, "keep"))).sort()).toEqual(["a", "b"]);
        expect(await readdir(join(root.merged, "gone"))).toEqual([]);
        expect(await readlink(join(root.merged, "link"))).toBe("keep/a");
        const x = await getXattrs([join(root.merged, "same/f")]);
        expect(x.get(join(root.merged, "same/f"))).toEqual({ "user.origin": Buffer.from("layer1") });
        expect(await collect(snapshotChanges(root, lowers))).toEqual([]);
      });

      it("turns adds, modifications, chmods, deletions and a recreated dir into the expected entries", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        await edit(root.merged);
        const entries = await collect(snapshotChanges(root, lowers, { exclude: ["proc", "/etc/resolv.conf"] }));
        expect(summary(entries)).toEqual(EXPECTED);
        const byPath = new Map(entries.map((e) => [e.path, e]));
        expect(await content(byPath.get("mod/f")!)).toBe("after!");
        expect(await content(byPath.get("tree/new")!)).toBe("recreated");
        expect(await content(byPath.get("chm/f")!)).toBe("mode");
      });

      it("keeps an excluded directory when something real was written below it", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        await mkdir(join(root.merged, "made"));
        await writeFile(join(root.merged, "made/mount"), "");
        await writeFile(join(root.merged, "made/real"), "real");
        const entries = await collect(snapshotChanges(root, lowers, { exclude: ["made", "made/mount"] }));
        expect(summary(entries)).toEqual(["made directory 755", "made/real file 644"]);
      });

      it("carries extended attributes of included files (file capabilities survive)", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        await writeFile(join(root.merged, "capped"), "bin");
        // cap_net_bind_service=+ep, as setcap writes it (VFS_CAP_REVISION_2).
        const cap = Buffer.from("0000000202040000000000000000000000000000", "hex");
        const warnings = await setXattrs([
          { path: join(root.merged, "capped"), name: "security.capability", value: cap },
          { path: join(root.merged, "capped"), name: "user.note", value: Buffer.from("hi") },
        ]);
        expect(warnings).toEqual([]);
        const entries = await collect(snapshotChanges(root, lowers));
        expect(entries.map((e) => e.path)).toEqual(["capped"]);
        expect(entries[0]!.xattrs).toEqual({ "security.capability": cap, "user.note": Buffer.from("hi") });
      });

      it("a capability set on a lower file (setcap, nothing else changed) is a change", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        const cap = Buffer.from("0000000202040000000000000000000000000000", "hex");
        expect(await setXattrs([{ path: join(root.merged, "keep/a"), name: "security.capability", value: cap }])).toEqual([]);
        const entries = await collect(snapshotChanges(root, lowers));
        expect(summary(entries)).toEqual(["keep directory 755", "keep/a file 644"]);
        expect(entries[1]!.xattrs).toEqual({ "security.capability": cap });
      });

      it("a file rewritten keeping its size and mtime (cp -p, touch -r) is a change", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        // keep/a is "keep" from 2020; the same size and the same mtime, other bytes.
        await writeFile(join(root.merged, "keep/a"), "KEEP");
        await utimes(join(root.merged, "keep/a"), old, old);
        expect((await lstat(join(root.merged, "keep/a"))).mtimeMs).toBe(old.getTime());
        const entries = await collect(snapshotChanges(root, lowers));
        expect(summary(entries)).toEqual(["keep directory 755", "keep/a file 644"]);
        expect(await content(entries[1]!)).toBe("KEEP");
      });

      it("a rm of every lower entry of a directory gives an opaque directory", async () => {
        const root = await mountRoot(lowers, join(base, "s"), { forceCopy: m.forceCopy, forceFuse: m.forceFuse });
        mounted.push(root);
        await rm(join(root.merged, "del/f"));
        await rm(join(root.merged, "del/g"));
        const entries = await collect(snapshotChanges(root, lowers));
        expect(summary(entries)).toEqual(["del directory 755", "del/.wh..wh..opq file 0"]);
      });
    });
  }

  it.skipIf(!canOverlay() || !haveTool("fuse-overlayfs"))("overlay, fuse-overlayfs and copy mode give byte-identical layers for the same edits", async () => {
    const digests: string[] = [];
    for (const [name, opts] of [["o", {}], ["f", { forceFuse: true }], ["c", { forceCopy: true }]] as const) {
      const root = await mountRoot(lowers, join(base, name), opts);
      await edit(root.merged);
      const chunks: Buffer[] = [];
      const { Writable } = await import("node:stream");
      const sink = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(c), cb()) });
      // Normalise timestamps: the two runs happen at different moments.
      const written = await writeLayer(snapshotChanges(root, lowers, { exclude: ["proc", "etc/resolv.conf"] }), sink, { sourceDateEpoch: 1000 });
      digests.push(written.diffId);
      await root.unmount();
    }
    expect(digests[1]).toBe(digests[0]);
    expect(digests[2]).toBe(digests[0]);
  });

  it.skipIf(!canOverlay())("the written layer applied to the flattened base reproduces the merged tree", async () => {
    const root = await mountRoot(lowers, join(base, "s"));
    mounted.push(root);
    await edit(root.merged);
    await rm(join(root.merged, "proc"), { recursive: true });
    await rm(join(root.merged, "etc/resolv.conf"));
    const layerDir = join(base, "layer");
    await mkdir(layerDir);
    const { writeLayerToDir } = await import("../../../src/oci/layer.js");
    const written = await writeLayerToDir(snapshotChanges(root, lowers), layerDir);
    const flat = join(base, "flat");
    await mkdir(flat);
    await materialize(lowers, flat);
    const { createReadStream } = await import("node:fs");
    await extractLayer(flat, createReadStream(written.path));
    expect(await treeListing(flat)).toEqual(await treeListing(root.merged));
  });
});

/** path, type, mode, owner and content hash of every entry (not mtimes). */
async function treeListing(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, r));
    let what = "";
    if (st.isFile()) what = createHash("sha256").update(await readFile(join(dir, r))).digest("hex").slice(0, 12);
    else if (st.isSymbolicLink()) what = await readlink(join(dir, r));
    out.push(`${r} ${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${what}`);
    if (st.isDirectory()) out.push(...(await treeListing(dir, r)));
  }
  return out;
}

describe("snapshot of a very large new directory", () => {
  it("lists 130,000 new files (more than one call's argument list can spread) in order", async () => {
    // On tmpfs when there is one: creating the files is the slow part, not the snapshot.
    const shm = "/dev/shm";
    const dir = await mkdtemp(join((await lstat(shm).catch(() => null))?.isDirectory() ? shm : tmpdir(), "ocibuild-bigsnap-"));
    try {
      const root = await mountRoot([], join(dir, "s"), { forceCopy: true });
      const big = join(root.merged, "node_modules");
      await mkdir(big);
      const { writeFileSync } = await import("node:fs");
      const n = 130_000;
      for (let i = 0; i < n; i++) writeFileSync(join(big, `f${String(i).padStart(6, "0")}`), "");
      const entries = await collect(snapshotChanges(root, []));
      expect(entries.length).toBe(n + 1);
      expect(entries[0]!.path).toBe("node_modules");
      expect(entries[1]!.path).toBe("node_modules/f000000");
      expect(entries[n]!.path).toBe(`node_modules/f${String(n - 1).padStart(6, "0")}`);
      await root.unmount();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
