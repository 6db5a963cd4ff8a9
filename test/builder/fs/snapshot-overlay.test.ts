import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mountRoot, type MountedRoot } from "../../../src/builder/fs/overlay.js";
import { snapshotChanges } from "../../../src/builder/fs/snapshot.js";
import { pruneExcluded } from "../../../src/builder/fs/upper-prune.js";
import type { LayerEntry } from "../../../src/oci/layer.js";
import { canOverlay, haveTool } from "../../../testdata/builder/fixtures.js";

describe.skipIf(!canOverlay())("mountRoot with many layers (needs root and overlayfs)", () => {
  let base: string;
  const mounted: MountedRoot[] = [];
  beforeEach(async () => {
    // A deep scratch path: 150 absolute lowerdir paths this long would not fit in one page of mount options.
    base = await mkdtemp(join(tmpdir(), `ocibuild-many-${"d".repeat(60)}-`));
  });
  afterEach(async () => {
    for (const m of mounted.splice(0)) await m.unmount();
    await rm(base, { recursive: true, force: true });
  });

  async function layers(n: number): Promise<string[]> {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const d = join(base, "layers", `layer-with-a-long-name-${String(i).padStart(4, "0")}`);
      await mkdir(join(d, "stack"), { recursive: true });
      await writeFile(join(d, "stack", `f${i}`), String(i));
      await writeFile(join(d, "top"), String(i));
      out.push(d);
    }
    return out;
  }

  it("mounts 150 lower layers with long paths (the most one mount takes) and shows the topmost file", async () => {
    const lowers = await layers(150);
    const logs: string[] = [];
    const root = await mountRoot(lowers, join(base, "scratch"), { maxLowerDirs: 1000, onLog: (l) => logs.push(l) });
    mounted.push(root);
    expect(root.mode).toBe("overlay");
    expect(logs.join("\n")).not.toMatch(/flattening/);
    expect(await readFile(join(root.merged, "top"), "utf8")).toBe("149");
    expect((await readdir(join(root.merged, "stack"))).length).toBe(150);
  });

  it("flattens the bottom layers beyond maxLowerDirs, with the same merged view and an empty snapshot", async () => {
    const lowers = await layers(8);
    const logs: string[] = [];
    const root = await mountRoot(lowers, join(base, "scratch"), { maxLowerDirs: 3, onLog: (l) => logs.push(l) });
    mounted.push(root);
    expect(logs.join("\n")).toMatch(/flattening the bottom 6 of 8 layers/);
    expect(await readFile(join(root.merged, "top"), "utf8")).toBe("7");
    expect((await readdir(join(root.merged, "stack"))).sort()).toEqual(["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"]);
    const entries: LayerEntry[] = [];
    for await (const e of snapshotChanges(root, lowers)) entries.push(e);
    expect(entries).toEqual([]);
    await writeFile(join(root.merged, "stack", "f0"), "changed");
    const after: string[] = [];
    for await (const e of snapshotChanges(root, lowers)) after.push(e.path);
    expect(after).toEqual(["stack", "stack/f0"]);
  });

  it("unmount is idempotent and leaves the upperdir for reuse as a lowerdir", async () => {
    const lowers = await layers(2);
    const root = await mountRoot(lowers, join(base, "scratch"));
    await writeFile(join(root.merged, "new"), "n");
    await root.unmount();
    await root.unmount();
    expect(await readFile(join(root.upper, "new"), "utf8")).toBe("n");
    const next = await mountRoot([...lowers, root.upper], join(base, "scratch2"));
    mounted.push(next);
    expect(await readFile(join(next.merged, "new"), "utf8")).toBe("n");
    expect(await readFile(join(next.merged, "top"), "utf8")).toBe("1");
  });

  it("a previous step's upperdir (kernel whiteouts and opaque xattr) works as a lowerdir for the next snapshot", async () => {
    const lowers = await layers(3);
    const step1 = await mountRoot(lowers, join(base, "step1"));
    mounted.push(step1);
    await rm(join(step1.merged, "stack"), { recursive: true });
    await mkdir(join(step1.merged, "stack"));
    await writeFile(join(step1.merged, "stack", "only"), "o");
    await rm(join(step1.merged, "top"));
    const first: string[] = [];
    for await (const e of snapshotChanges(step1, lowers)) first.push(e.path);
    expect(first).toEqual([".wh.top", "stack", "stack/.wh..wh..opq", "stack/only"]);
    await step1.unmount();

    const chain = [...lowers, step1.upper];
    const step2 = await mountRoot(chain, join(base, "step2"));
    mounted.push(step2);
    expect(await readdir(join(step2.merged, "stack"))).toEqual(["only"]);
    const none: LayerEntry[] = [];
    for await (const e of snapshotChanges(step2, chain)) none.push(e);
    expect(none).toEqual([]);
    // Writing back a file the opaque dir hid is a change (it is not "unchanged vs the lower layers").
    await writeFile(join(step2.merged, "stack", "f0"), "0");
    await writeFile(join(step2.merged, "top"), "2");
    const second: string[] = [];
    for await (const e of snapshotChanges(step2, chain)) second.push(e.path);
    expect(second).toEqual(["stack", "stack/f0", "top"]);
  });

  it("pruneExcluded removes mount points from a kept upperdir but not real content, and never follows symlinks", async () => {
    const lowers = await layers(1);
    const root = await mountRoot(lowers, join(base, "scratch"));
    mounted.push(root);
    await mkdir(join(root.merged, "proc"));
    await mkdir(join(root.merged, "etc"));
    await writeFile(join(root.merged, "etc/resolv.conf"), "");
    await writeFile(join(root.merged, "etc/real"), "real");
    const victim = join(base, "victim");
    await mkdir(victim);
    await writeFile(join(victim, "hosts"), "keep me");
    const { symlink } = await import("node:fs/promises");
    await symlink(victim, join(root.merged, "sneaky"));
    const exclude = ["proc", "etc", "etc/resolv.conf", "sneaky/hosts"];
    const paths: string[] = [];
    for await (const e of snapshotChanges(root, lowers, { exclude })) paths.push(e.path);
    expect(paths).toEqual(["etc", "etc/real", "sneaky"]);
    await root.unmount();
    pruneExcluded(root.upper, exclude);
    expect((await readdir(root.upper)).sort()).toEqual(["etc", "sneaky"]);
    expect(await readdir(join(root.upper, "etc"))).toEqual(["real"]);
    expect(await readFile(join(victim, "hosts"), "utf8")).toBe("keep me");
  });

  it("falls back to fuse-overlayfs (else copy mode), and says so, when overlayfs refuses the mount", async () => {
    const lowers = await layers(2);
    // An overlayfs cannot be the upper filesystem of another: a real mount failure.
    const outer = await mountRoot(lowers, join(base, "outer"));
    mounted.push(outer);
    const logs: string[] = [];
    const inner = await mountRoot(lowers, join(outer.merged, "scratch"), { onLog: (l) => logs.push(l) });
    // fuse-overlayfs takes an overlayfs as its upper filesystem where the kernel's overlay does not.
    if (haveTool("fuse-overlayfs")) {
      expect(inner.mode).toBe("fuse-overlayfs");
      expect(logs.join("\n")).toMatch(/root: fuse-overlayfs with 2 lower layer\(s\) at .+ \(overlayfs: .+\)/);
    } else {
      expect(inner.mode).toBe("copy");
      expect(logs.join("\n")).toMatch(/overlayfs unavailable \(.+\); falling back to copy mode/);
    }
    expect(await readFile(join(inner.merged, "top"), "utf8")).toBe("1");
    await writeFile(join(inner.merged, "top"), "changed");
    const paths: string[] = [];
    for await (const e of snapshotChanges(inner, lowers)) paths.push(e.path);
    expect(paths).toEqual(["top"]);
    await inner.unmount();
  });
});

