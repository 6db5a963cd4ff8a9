/**
 * Overlay snapshots look only at the names the step's upperdir holds (and at every
 * name of a directory the step made opaque). These edits are the cases where that
 * shortcut could differ from comparing the whole merged tree (copy mode): every
 * entry of a lower directory deleted while the directory stays, a directory
 * replaced wholesale, one change among many lower files spread over several layers,
 * lower whiteouts and opaque directories below the change.
 */
import { Writable } from "node:stream";
import { chmod, link, mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mountRoot, type MountedRoot } from "../../../src/builder/fs/overlay.js";
import { snapshotChanges } from "../../../src/builder/fs/snapshot.js";
import { mknod, setXattrs } from "../../../src/builder/fs/native.js";
import { writeLayer, type LayerEntry } from "../../../src/oci/layer.js";
import { canOverlay } from "../../../testdata/builder/fixtures.js";

const old = new Date("2020-01-01T00:00:00Z");

async function file(path: string, text: string): Promise<void> {
  await writeFile(path, text);
  await utimes(path, old, old);
}

/** Three lower layers in overlay form: many files in one directory across layers, a whiteout, an opaque dir. */
async function makeLowers(base: string): Promise<string[]> {
  const l = [join(base, "l0"), join(base, "l1"), join(base, "l2")];
  for (const d of l) await mkdir(join(d, "big"), { recursive: true });
  for (let i = 0; i < 150; i++) await file(join(l[i % 3]!, "big", `f${String(i).padStart(3, "0")}`), `v${i}`);
  await mkdir(join(l[0]!, "empty-me"));
  for (const n of ["a", "b", "c"]) await file(join(l[0]!, "empty-me", n), n);
  await mkdir(join(l[1]!, "empty-me"));
  await file(join(l[1]!, "empty-me", "d"), "d");
  await mkdir(join(l[0]!, "replace/sub"), { recursive: true });
  await file(join(l[0]!, "replace/sub/x"), "x");
  await file(join(l[0]!, "replace/y"), "y");
  // Layer 1 deletes big/f000 (whiteout device) and replaces "shadow" wholesale (opaque).
  await mknod(join(l[1]!, "big", "f000"), "char", 0, 0, 0);
  await mkdir(join(l[0]!, "shadow"));
  await file(join(l[0]!, "shadow", "hidden"), "h");
  await mkdir(join(l[1]!, "shadow"));
  await file(join(l[1]!, "shadow", "shown"), "s");
  expect(await setXattrs([{ path: join(l[1]!, "shadow"), name: "trusted.overlay.opaque", value: Buffer.from("y") }])).toEqual([]);
  await mkdir(join(l[2]!, "deep/a/b"), { recursive: true });
  await file(join(l[2]!, "deep/a/b/leaf"), "leaf");
  return l;
}

async function edit(m: string): Promise<void> {
  // Every lower entry of a directory deleted, the directory kept.
  for (const n of await readdir(join(m, "empty-me"))) await rm(join(m, "empty-me", n));
  // A directory replaced wholesale.
  await rm(join(m, "replace"), { recursive: true });
  await mkdir(join(m, "replace"));
  await writeFile(join(m, "replace/new"), "new");
  // One change among many, one deletion, a touch that changes nothing.
  await writeFile(join(m, "big/f077"), "changed");
  await rm(join(m, "big/f100"));
  await utimes(join(m, "big/f050"), new Date(), new Date());
  // A name the lower layers deleted comes back; the opaque dir gets a file.
  await writeFile(join(m, "big/f000"), "back");
  await writeFile(join(m, "shadow/hidden"), "again");
  // A deep change and a chmod of a lower directory.
  await writeFile(join(m, "deep/a/b/leaf2"), "2");
  await chmod(join(m, "deep/a"), 0o700);
}

const EXPECTED = [
  "big directory 755",
  "big/f000 file 644",
  "big/.wh.f100 file 0",
  "big/f077 file 644",
  "deep directory 755",
  "deep/a directory 700",
  "deep/a/b directory 755",
  "deep/a/b/leaf2 file 644",
  "empty-me directory 755",
  "empty-me/.wh..wh..opq file 0",
  "replace directory 755",
  "replace/.wh..wh..opq file 0",
  "replace/new file 644",
  "shadow directory 755",
  "shadow/hidden file 644",
];

describe.skipIf(!canOverlay())("overlay snapshots walk the upperdir (needs root and overlayfs)", () => {
  let base: string;
  const mounted: MountedRoot[] = [];
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "ocibuild-upper-"));
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await m.unmount();
    await rm(base, { recursive: true, force: true });
  });

  it("gives the same entries and the same layer bytes as comparing the whole tree (copy mode)", async () => {
    const lowers = await makeLowers(base);
    const results: { summary: string[]; diffId: string }[] = [];
    for (const forceCopy of [false, true]) {
      const root = await mountRoot(lowers, join(base, forceCopy ? "copy" : "overlay"), { forceCopy });
      mounted.push(root);
      expect(root.mode).toBe(forceCopy ? "copy" : "overlay");
      await edit(root.merged);
      const entries: LayerEntry[] = [];
      for await (const e of snapshotChanges(root, lowers)) entries.push(e);
      const summary = entries.map((e) => `${e.path} ${e.type} ${e.mode.toString(8)}`);
      const sink = new Writable({ write: (_c, _e, cb) => cb() });
      const written = await writeLayer(snapshotChanges(root, lowers), sink, { sourceDateEpoch: 1000 });
      results.push({ summary, diffId: written.diffId });
    }
    const sorted = (s: string[]) => [...s].sort();
    expect(sorted(results[0]!.summary)).toEqual(sorted(EXPECTED));
    expect(results[0]!.summary).toEqual(results[1]!.summary);
    expect(results[0]!.diffId).toBe(results[1]!.diffId);
  });

  it("a step that changes nothing gives no entries, whatever the number of lower layers", async () => {
    const lowers = await makeLowers(base);
    const root = await mountRoot(lowers, join(base, "s"));
    mounted.push(root);
    await utimes(join(root.merged, "big/f001"), new Date(), new Date());
    const entries: LayerEntry[] = [];
    for await (const e of snapshotChanges(root, lowers)) entries.push(e);
    expect(entries.map((e) => e.path)).toEqual([]);
  });

  it("reads what the step added or replaced in the upperdir, with its xattrs, giving copy mode's entries and bytes", async () => {
    const lowers = await makeLowers(base);
    const cap = Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // cap_net_bind_service, permitted
    const results: { summary: string[]; xattrs: string[]; diffId: string }[] = [];
    for (const forceCopy of [false, true]) {
      const root = await mountRoot(lowers, join(base, forceCopy ? "copy" : "overlay"), { forceCopy });
      mounted.push(root);
      const m = root.merged;
      // A new subtree (with a file capability and a user xattr, a hardlink, a file over the
      // one-call read size), a replaced directory, and a rewritten lower file.
      await mkdir(join(m, "deps/pkg/lib"), { recursive: true });
      await file(join(m, "deps/pkg/lib/a.js"), "module.exports = 1;\n");
      await writeFile(join(m, "deps/pkg/big.bin"), Buffer.alloc(300 * 1024, 7));
      await link(join(m, "deps/pkg/lib/a.js"), join(m, "deps/pkg/lib/a-link.js"));
      await writeFile(join(m, "deps/pkg/tool"), "#!/bin/sh\n");
      expect(await setXattrs([{ path: join(m, "deps/pkg/tool"), name: "security.capability", value: cap }])).toEqual([]);
      expect(await setXattrs([{ path: join(m, "deps/pkg/lib"), name: "user.note", value: Buffer.from("dir") }])).toEqual([]);
      await rm(join(m, "replace"), { recursive: true });
      await mkdir(join(m, "replace"));
      await writeFile(join(m, "replace/new"), "new");
      await writeFile(join(m, "big/f077"), "changed");
      // A hardlink between the new subtree and a rewritten lower file: one key space for both.
      await link(join(m, "big/f077"), join(m, "deps/pkg/lib/f077"));
      const entries: LayerEntry[] = [];
      for await (const e of snapshotChanges(root, lowers)) entries.push(e);
      if (!forceCopy && root.plainUpper) {
        // The lever itself: content read where it lies, not through overlayfs.
        const reads = entries.filter((e) => e.sourcePath !== undefined).map((e) => e.sourcePath!);
        expect(reads.length).toBe(5);
        for (const r of reads) expect(r.startsWith(`${root.upper}/`)).toBe(true);
      }
      const sink = new Writable({ write: (_c, _e, cb) => cb() });
      const written = await writeLayer(snapshotChanges(root, lowers), sink, { sourceDateEpoch: 1000 });
      results.push({
        summary: entries.map((e) => `${e.path} ${e.type} ${e.linkname ?? ""}`),
        xattrs: entries.flatMap((e) => Object.entries(e.xattrs ?? {}).map(([k, v]) => `${e.path} ${k}=${v.toString("hex")}`)),
        diffId: written.diffId,
      });
    }
    expect(results[0]!.xattrs).toEqual(["deps/pkg/lib user.note=646972", `deps/pkg/tool security.capability=${cap.toString("hex")}`]);
    expect(results[0]!.summary).toContain("deps/pkg/lib/a.js hardlink deps/pkg/lib/a-link.js");
    expect(results[0]!.summary).toContain("deps/pkg/lib/f077 hardlink big/f077");
    expect(results[0]!.summary).toEqual(results[1]!.summary);
    expect(results[0]!.xattrs).toEqual(results[1]!.xattrs);
    expect(results[0]!.diffId).toBe(results[1]!.diffId);
  });
});
